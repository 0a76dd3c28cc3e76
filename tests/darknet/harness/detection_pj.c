// cnnlab test harness (cnnlab's own code; links against a darknet build): pjreddie's forward_yolo_layer
// (argv[3] = "yolo") or forward_region_layer ("region") on the inputs in argv[1]; writes delta, output, cost, 0, 0.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "darknet.h"
#include "yolo_layer.h"
#include "region_layer.h"

static void rd(FILE *f, void *p, size_t sz, size_t n) { if (fread(p, sz, n, f) != n) { fprintf(stderr, "short read\n"); exit(1); } }

int main(int argc, char **argv)
{
    if (argc != 4) return 2;
    int yolo = strcmp(argv[3], "yolo") == 0;
    FILE *f = fopen(argv[1], "rb");
    int hd[10];  // batch w h n total classes net_w net_h seen softmax|bias_match<<1|rescore<<2
    rd(f, hd, sizeof(int), 10);
    int batch = hd[0], n = hd[3], total = hd[4], classes = hd[5], mx = yolo ? 90 : 30;
    layer l;
    if (yolo) {
        int *mask = calloc(n, sizeof(int));
        rd(f, mask, sizeof(int), n);
        l = make_yolo_layer(batch, hd[1], hd[2], n, total, mask, classes);
        l.max_boxes = mx;
    } else {
        l = make_region_layer(batch, hd[1], hd[2], n, classes, 4);
        l.softmax = hd[9] & 1; l.bias_match = (hd[9] >> 1) & 1; l.rescore = (hd[9] >> 2) & 1;
    }
    rd(f, l.biases, sizeof(float), 2 * total);
    float pf[6];  // ignore_thresh|thresh truth_thresh coord object noobject class scales
    rd(f, pf, sizeof(float), 6);
    l.ignore_thresh = pf[0]; l.thresh = pf[0]; l.truth_thresh = pf[1];
    l.coord_scale = pf[2]; l.object_scale = pf[3]; l.noobject_scale = pf[4]; l.class_scale = pf[5];
    float *input = calloc(batch * l.outputs, sizeof(float));
    rd(f, input, sizeof(float), batch * l.outputs);
    float *truth = calloc(batch * l.truths, sizeof(float));  // x y w h class, l.truths = max * 5
    rd(f, truth, sizeof(float), batch * mx * 5);
    fclose(f);
    network net = {0};
    size_t seen = hd[8];
    net.w = hd[6]; net.h = hd[7]; net.seen = &seen; net.index = 5;
    net.input = input; net.truth = truth; net.train = 1;
    if (yolo) forward_yolo_layer(l, net); else forward_region_layer(l, net);
    FILE *o = fopen(argv[2], "wb");
    fwrite(l.delta, sizeof(float), batch * l.outputs, o);
    fwrite(l.output, sizeof(float), batch * l.outputs, o);
    float tail[3] = {*l.cost, 0, 0};
    fwrite(tail, sizeof(float), 3, o);
    fclose(o);
    return 0;
}
