// cnnlab test harness (cnnlab's own code; links against a darknet build): AlexeyAB's forward_region_layer
// on the inputs in argv[1]; writes delta, output, cost, 0, 0 to argv[2].
#include <stdio.h>
#include <stdlib.h>
#include "darknet.h"
#include "region_layer.h"

static void rd(FILE *f, void *p, size_t sz, size_t n) { if (fread(p, sz, n, f) != n) { fprintf(stderr, "short read\n"); exit(1); } }

int main(int argc, char **argv)
{
    if (argc != 3) return 2;
    FILE *f = fopen(argv[1], "rb");
    int hd[10];  // batch w h n classes max net_w net_h seen softmax|bias_match<<1|rescore<<2
    rd(f, hd, sizeof(int), 10);
    int batch = hd[0], n = hd[3], mx = hd[5];
    layer l = make_region_layer(batch, hd[1], hd[2], n, hd[4], 4, mx);
    l.softmax = hd[9] & 1; l.bias_match = (hd[9] >> 1) & 1; l.rescore = (hd[9] >> 2) & 1;
    rd(f, l.biases, sizeof(float), 2 * n);
    float pf[5];  // thresh coord object noobject class scales
    rd(f, pf, sizeof(float), 5);
    l.thresh = pf[0]; l.coord_scale = pf[1]; l.object_scale = pf[2]; l.noobject_scale = pf[3]; l.class_scale = pf[4];
    float *input = calloc(batch * l.outputs, sizeof(float));
    rd(f, input, sizeof(float), batch * l.outputs);
    float *t5 = calloc(batch * mx * 5, sizeof(float));  // x y w h class
    rd(f, t5, sizeof(float), batch * mx * 5);
    fclose(f);
    float *truth = calloc(batch * l.truths, sizeof(float));
    for (int i = 0; i < batch * mx; ++i)
        for (int k = 0; k < 5; ++k) truth[(i / mx) * l.truths + (i % mx) * l.truth_size + k] = t5[i * 5 + k];
    network net = {0};
    uint64_t seen = hd[8];
    net.w = hd[6]; net.h = hd[7]; net.seen = &seen;
    network_state state = {0};
    state.net = net; state.input = input; state.truth = truth; state.train = 1; state.index = 5;
    forward_region_layer(l, state);
    FILE *o = fopen(argv[2], "wb");
    fwrite(l.delta, sizeof(float), batch * l.outputs, o);
    fwrite(l.output, sizeof(float), batch * l.outputs, o);
    float tail[3] = {*l.cost, 0, 0};
    fwrite(tail, sizeof(float), 3, o);
    fclose(o);
    return 0;
}
