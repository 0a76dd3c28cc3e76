// cnnlab test harness (cnnlab's own code; links against a darknet build, nothing of darknet is copied):
// runs AlexeyAB's forward_yolo_layer on the inputs in argv[1] and writes delta, output, cost, total_bbox,
// rewritten_bbox to argv[2]. Used by tests/darknet/make_yolo_loss_reference.py.
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include "darknet.h"
#include "yolo_layer.h"

static void rd(FILE *f, void *p, size_t sz, size_t n) { if (fread(p, sz, n, f) != n) { fprintf(stderr, "short read\n"); exit(1); } }

int main(int argc, char **argv)
{
    if (argc != 3) return 2;
    FILE *f = fopen(argv[1], "rb");
    int hd[16];  // batch w h n total classes net_w net_h max iou_loss iou_thresh_kind objectness_smooth new_coords focal show_details has_cm
    rd(f, hd, sizeof(int), 16);
    int batch = hd[0], n = hd[3], total = hd[4], classes = hd[5];
    int *mask = calloc(n, sizeof(int));
    rd(f, mask, sizeof(int), n);
    float pf[9];  // ignore truth iou_thresh iou_norm obj_norm cls_norm label_smooth scale_x_y max_delta(<0: none)
    rd(f, pf, sizeof(float), 9);
    layer l = make_yolo_layer(batch, hd[1], hd[2], n, total, mask, classes, hd[8]);
    rd(f, l.biases, sizeof(float), 2 * total);
    l.ignore_thresh = pf[0]; l.truth_thresh = pf[1]; l.iou_thresh = pf[2]; l.iou_normalizer = pf[3];
    l.obj_normalizer = pf[4]; l.cls_normalizer = pf[5]; l.label_smooth_eps = pf[6]; l.scale_x_y = pf[7];
    l.max_delta = pf[8] < 0 ? FLT_MAX : pf[8];
    l.iou_loss = (IOU_LOSS)hd[9]; l.iou_thresh_kind = (IOU_LOSS)hd[10];
    l.objectness_smooth = hd[11]; l.new_coords = hd[12]; l.focal_loss = hd[13]; l.show_details = hd[14];
    l.classes_multipliers = 0;
    if (hd[15]) { l.classes_multipliers = calloc(classes, sizeof(float)); rd(f, l.classes_multipliers, sizeof(float), classes); }
    float *input = calloc(batch * l.outputs, sizeof(float));
    rd(f, input, sizeof(float), batch * l.outputs);
    float *truth = calloc(batch * l.truths, sizeof(float));  // x y w h class track_id
    rd(f, truth, sizeof(float), batch * l.truths);
    fclose(f);
    network net = {0};
    int it = 0, tb = 0, rb = 0;
    net.w = hd[6]; net.h = hd[7]; net.cur_iteration = &it; net.total_bbox = &tb; net.rewritten_bbox = &rb;
    network_state state = {0};
    state.net = net; state.input = input; state.truth = truth; state.train = 1; state.index = 5;
    forward_yolo_layer(l, state);
    FILE *o = fopen(argv[2], "wb");
    fwrite(l.delta, sizeof(float), batch * l.outputs, o);
    fwrite(l.output, sizeof(float), batch * l.outputs, o);
    float tail[3] = {*l.cost, (float)tb, (float)rb};
    fwrite(tail, sizeof(float), 3, o);
    fclose(o);
    return 0;
}
