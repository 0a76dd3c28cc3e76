"""[yolo]/[region] training deltas against values worked out by hand from darknet's formulas.

Formulas: AlexeyAB src/yolo_layer.c (forward_yolo_layer, delta_yolo_box, delta_yolo_class,
averages_yolo_deltas), src/box.c (box_iou, dx_box_iou), pjreddie src/region_layer.c.

The hand-built [yolo] layer: a 2x2 grid on a 64x64 network input (one cell = 32 px), anchors
a0 = 16x16, a1 = 32x48, a2 = 60x60 (num=3), mask=0,1 (this layer holds a0 and a1), 2 classes.
Outputs are given post-activation, as the layer's forward returns them.
"""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.darknet.box_iou import box_ious, dx_box_iou
from cnnlab.darknet.cfg import parse_cfg
from cnnlab.darknet.layers import BuildContext, Region, Yolo
from cnnlab.darknet.yolo_loss import detection_deltas, detection_loss
from cnnlab.errors import CnnlabError

from .yolo_loss_ref import CASES as REF_CASES
from .yolo_loss_ref import load as load_reference
from .yolo_loss_ref import ours as ref_ours

ANCHORS = "anchors=16,16, 32,48, 60,60\nnum=3\nclasses=2\n"
C5 = 7  # 5 + classes


def yolo(opts: str = "", mask: str = "0,1", flavor: str = "alexeyab", grid: int = 2, index: int = 5) -> Yolo:
    sec = parse_cfg(f"[net]\n[yolo]\nmask={mask}\n{ANCHORS}{opts}")[1]
    n = len(mask.split(","))
    return Yolo(sec, BuildContext(flavor, index, (n * C5, grid, grid), [], 64, 64))


def baseline(b: int = 1, n: int = 2) -> torch.Tensor:
    """Outputs (B, n, 5+C, H, W): x = y = 0.5 (cell centre), raw w = h = 0 (anchor size), obj 0.4, classes 0.1, 0.2."""
    out = torch.zeros(b, n, C5, 2, 2)
    out[:, :, 0:2] = 0.5
    out[:, :, 4] = 0.4
    out[:, :, 5] = 0.1
    out[:, :, 6] = 0.2
    return out


def no_object(out: torch.Tensor) -> torch.Tensor:
    """Expected delta before any truth: objectness pushed to 0, obj_normalizer·(0 - obj)."""
    exp = torch.zeros_like(out)
    exp[:, :, 4] = -out[:, :, 4]
    return exp


def truths(*rows: list[list[float]]) -> torch.Tensor:
    """(B, M, 5) [cls, x, y, w, h], padded with cls = -1."""
    m = max(len(r) for r in rows)
    t = torch.zeros(len(rows), m, 5)
    t[..., 0] = -1
    for b, r in enumerate(rows):
        if r:
            t[b, : len(r)] = torch.tensor(r)
    return t


def deltas(layer: Yolo | Region, out: torch.Tensor, truth: torch.Tensor, **kw: int):
    ld = detection_deltas([layer], [out.reshape(out.shape[0], -1, *out.shape[3:])], truth, 64, 64, **kw)[0]
    return ld, ld.delta.reshape(out.shape)


# truth T: class 1, centre (0.3, 0.7), size 0.5 x 0.75 (32 x 48 px, exactly a1): cell i = int(0.3·2) = 0,
# j = int(0.7·2) = 1; shape IoU with a0 = (.25·.25)/.375 = 1/6, a1 = 1, a2 = .375/(.9375²) = .4267 -> a1, slot m=1
T = [1, 0.3, 0.7, 0.5, 0.75]


def iou_by_hand(p: tuple[float, float, float, float], t: tuple[float, ...]) -> float:
    """box_iou written out: overlap of the edges on each axis, intersection over union."""
    ow = min(p[0] + p[2] / 2, t[0] + t[2] / 2) - max(p[0] - p[2] / 2, t[0] - t[2] / 2)
    oh = min(p[1] + p[3] / 2, t[1] + t[3] / 2) - max(p[1] - p[3] / 2, t[1] - t[3] / 2)
    inter = max(ow, 0) * max(oh, 0)
    return inter / (p[2] * p[3] + t[2] * t[3] - inter)


def assigned_slot(out: torch.Tensor, b: int = 0) -> None:
    """The prediction at T's slot (m=1, j=1, i=0): x .4, y .6, raw w .1, raw h -.2, obj .7, classes .3, .6."""
    out[b, 1, :, 1, 0] = torch.tensor([0.4, 0.6, 0.1, -0.2, 0.7, 0.3, 0.6])


# get_yolo_box at that slot: x = (i + .4)/2, y = (j + .6)/2, w = e^.1·32/64, h = e^-.2·48/64
PRED = (0.4 / 2, 1.6 / 2, math.exp(0.1) * 32 / 64, math.exp(-0.2) * 48 / 64)


def test_mse_box_objectness_ignore_and_classes() -> None:
    layer = yolo("iou_normalizer=0.5\nignore_thresh=0.5\n")
    out = baseline(b=2)
    assigned_slot(out, 0)
    # image 0, slot (m=0, j=1, i=0): nearly T (x (0+.62)/2 = .31, y (1+.4)/2 = .7, w e^ln2·16/64 = .5,
    # h e^ln3·16/64 = .75: IoU .49·.75/(.375+.375-.3675) = .96 > ignore_thresh) and class 0 at .3 > .25
    # (compare_yolo_class): not pushed to 0
    out[0, 0, :, 1, 0] = torch.tensor([0.62, 0.4, math.log(2), math.log(3), 0.4, 0.3, 0.1])
    # image 1: the same box, but no class output above .25: pushed to 0 all the same
    out[1, 0, :, 1, 0] = torch.tensor([0.62, 0.4, math.log(2), math.log(3), 0.4, 0.2, 0.1])
    # image 1 also holds a box whose best anchor is a2 (.9 x .9: IoU with a2 = .81/.8789): another layer's
    truth = truths([T], [T, [0, 0.75, 0.25, 0.9, 0.9]])
    ld, d = deltas(layer, out, truth)

    exp = no_object(out)  # every other prediction overlaps T by less than .5 (at most .2195)
    exp[0, 0, 4, 1, 0] = 0.0  # ignored
    # delta_yolo_box, mse: scale = 2 - w·h = 2 - .5·.75 = 1.625; tx = .3·2 - 0 = .6, ty = .7·2 - 1 = .4,
    # tw = log(.5·64/32) = 0, th = log(.75·64/48) = 0; delta = scale·(t - output)·iou_normalizer
    s = 1.625 * 0.5
    exp[0, 1, 0:4, 1, 0] = torch.tensor([s * (0.6 - 0.4), s * (0.4 - 0.6), s * (0 - 0.1), s * (0 + 0.2)])
    exp[0, 1, 4, 1, 0] = 1 - 0.7  # objectness: obj_normalizer·(1 - obj)
    exp[0, 1, 5:, 1, 0] = torch.tensor([0 - 0.3, 1 - 0.6])  # delta_yolo_class: one-hot - output
    # image 1, T's slot holds the baseline: x .5, y .5, w = h = 0
    exp[1, 1, 0:4, 1, 0] = torch.tensor([s * (0.6 - 0.5), s * (0.4 - 0.5), 0.0, 0.0])
    exp[1, 1, 4, 1, 0] = 1 - 0.4
    exp[1, 1, 5:, 1, 0] = torch.tensor([0 - 0.1, 1 - 0.2])
    torch.testing.assert_close(d, exp, rtol=1e-5, atol=1e-6)

    iou0 = iou_by_hand(PRED, T[1:])  # 0.5322
    iou1 = iou_by_hand((0.25, 0.75, 0.5, 0.75), T[1:])  # .45·.7 / (.75 - .315) = 0.7241
    assert ld.count == 2 and ld.class_count == 2 and ld.skipped_truths == 0
    assert ld.tot_iou == pytest.approx(iou0 + iou1, rel=1e-5)
    assert ld.n_recall50 == 2 and ld.n_recall75 == 0 and ld.recall50 == 1.0
    assert ld.tot_obj == pytest.approx(0.7 + 0.4) and ld.tot_cat == pytest.approx(0.6 + 0.2)
    assert ld.tot_anyobj == pytest.approx(float(out[:, :, 4].sum()))
    loss = float((exp**2).sum())  # mse: l.cost = mag_array(delta)²
    class_loss = float((exp[:, :, 4:] ** 2).sum())
    assert ld.cost == pytest.approx(loss, rel=1e-5)
    assert ld.class_loss == pytest.approx(class_loss, rel=1e-5)
    assert ld.line() == (
        f"v3 (mse loss, Normalizer: (iou: 0.50, obj: 1.00, cls: 1.00) Region 5 Avg (IOU: {(iou0 + iou1) / 2:f}), count: 2, "
        f"class_loss = {class_loss / 2:f}, iou_loss = {(loss - class_loss) / 2:f}, total_loss = {loss / 2:f} "
    )


def test_ciou_box_delta_term_by_term() -> None:
    layer = yolo("iou_loss=ciou\niou_normalizer=0.07\n")
    out = baseline()
    assigned_slot(out)
    ld, d = deltas(layer, out, truths([T]))
    # dx_box_iou(pred, truth, CIOU) for this geometry, written out
    px, py, pw, ph = PRED
    tx, ty, tw, th = T[1:]
    pl, pr, pt, pb = px - pw / 2, px + pw / 2, py - ph / 2, py + ph / 2
    gl, gr, gt, gb = tx - tw / 2, tx + tw / 2, ty - th / 2, ty + th / 2
    assert pl < gl and pr < gr and pt > gt and pb > gb  # decides every branch below
    iw, ih = pr - gl, gb - pt  # min(pr, gr) - max(pl, gl), min(pb, gb) - max(pt, gt)
    inter, union = iw * ih, pw * ph + tw * th - iw * ih
    d_inter = {"t": -iw, "b": 0.0, "l": 0.0, "r": ih}  # dI_wrt_t = pred_t > truth_t ? -Iw : 0, ...
    d_area = {"t": -pw, "b": pw, "l": -ph, "r": ph}  # dX_wrt_*
    p = {k: (union * d_inter[k] - inter * (d_area[k] - d_inter[k])) / union**2 for k in "tblr"}
    p_dx, p_dy, p_dw, p_dh = p["l"] + p["r"], p["t"] + p["b"], p["r"] - p["l"], p["b"] - p["t"]
    cw, ch = gr - pl, pb - gt  # enclosing box
    c, s = cw**2 + ch**2, (px - tx) ** 2 + (py - ty) ** 2
    dcw_dx, dcw_dw, dch_dy, dch_dh = 0 - 1, 0 - (-0.5), 1 - 0, 0.5 - 0  # dCr - dCl, dCb - dCt
    atan_d = math.atan(tw / th) - math.atan(pw / ph)
    ar = 4 / math.pi**2 * atan_d**2
    alpha = ar / (1 - inter / union + ar + 0.000001)
    p_dx += (2 * (tx - px) * c - 2 * cw * dcw_dx * s) / c**2
    p_dy += (2 * (ty - py) * c - 2 * ch * dch_dy * s) / c**2
    p_dw += 2 * cw * dcw_dw * s / c**2 + alpha * 8 / math.pi**2 * atan_d * ph
    p_dh += 2 * ch * dch_dh * s / c**2 + alpha * -8 / math.pi**2 * atan_d * pw
    # delta_yolo_box: dw, dh times exp(t_w), exp(t_h); all times iou_normalizer; accumulated
    want = torch.tensor([p_dx, p_dy, p_dw * math.exp(0.1), p_dh * math.exp(-0.2)]) * 0.07
    exp = no_object(out)
    exp[0, 1, 0:4, 1, 0] = want
    exp[0, 1, 4, 1, 0] = 1 - 0.7
    exp[0, 1, 5:, 1, 0] = torch.tensor([-0.3, 0.4])
    torch.testing.assert_close(d, exp, rtol=1e-4, atol=1e-7)
    # cost with an IoU loss: iou_normalizer·Σ(1 - iou)/count + obj_normalizer·|delta without boxes|²
    class_loss = float((exp[:, :, 4:] ** 2).sum())
    assert ld.cost == pytest.approx(0.07 * (1 - inter / union) + class_loss, rel=1e-5)
    assert ld.line().startswith("v3 (iou loss, Normalizer: (iou: 0.07, obj: 1.00, cls: 1.00) Region 5 Avg (IOU: ")


@pytest.mark.parametrize("kind", ["iou", "giou"])
def test_dx_box_iou_is_the_gradient_of_iou_and_giou(kind: str) -> None:
    # overlapping boxes in general position (no two edges equal): darknet's dx, dy are d/dx, d/dy; its dw, dh
    # are 2·d/dw, 2·d/dh (box.c: "we do not divide by 2"). Not so for DIoU/CIoU: box.c's distance terms are not
    # the gradient of its DIoU (the enclosing box's derivative enters x, y with the opposite sign, and w, h are not
    # doubled), hence the term-by-term test above.
    pred = torch.tensor([[0.2, 0.8, 0.55, 0.61], [0.5, 0.52, 0.2, 0.3], [0.4, 0.45, 0.9, 0.2]], dtype=torch.float64)
    truth = torch.tensor([[0.3, 0.7, 0.5, 0.75], [0.55, 0.45, 0.4, 0.2], [0.5, 0.5, 0.3, 0.6]], dtype=torch.float64)
    p = pred.clone().requires_grad_()
    getattr(box_ious(p, truth), kind).sum().backward()
    dx, dy, dw, dh = dx_box_iou(pred, truth, kind)
    g = p.grad
    torch.testing.assert_close(torch.stack([dx, dy, dw / 2, dh / 2], -1), g)


def test_label_smoothing_and_counters_per_class() -> None:
    out = baseline()
    assigned_slot(out)
    _, d = deltas(yolo("label_smooth_eps=0.1\n"), out, truths([T]))
    # y_true = y·(1 - eps) + 0.5·eps: 0.95 for the class, 0.05 for the others
    torch.testing.assert_close(d[0, 1, 5:, 1, 0], torch.tensor([0.05 - 0.3, 0.95 - 0.6]))
    # counters_per_class=100,50: multipliers max/count = 1, 2; cls_normalizer only counts with them
    _, d = deltas(yolo("counters_per_class=100,50\ncls_normalizer=0.5\n"), out, truths([T]))
    torch.testing.assert_close(d[0, 1, 5:, 1, 0], torch.tensor([-0.3, (1 - 0.6) * 2 * 0.5]))
    assert float(d[0, 1, 4, 1, 0]) == pytest.approx(2 * (1 - 0.7))  # class_multiplier·obj_normalizer·(1 - obj)
    s = 1.625 * 0.75 * 2  # (2 - w·h)·iou_normalizer (default .75)·class_multiplier
    assert float(d[0, 1, 0, 1, 0]) == pytest.approx(s * (0.6 - 0.4))


def test_iou_thresh_trains_other_masked_anchors_and_averages() -> None:
    # iou_thresh=.15: a0 (shape IoU 1/6) trains too; a2 (.4267) is above but not in this layer's mask
    layer = yolo("iou_thresh=0.15\nlabel_smooth_eps=0.2\n")
    out = baseline()
    assigned_slot(out)
    out[0, 0, 5, 1, 0] = 0.05  # a0's class 0 output: smoothed target 0.1 > 0.05, so two classes get a positive delta
    ld, d = deltas(layer, out, truths([T]))
    s = 1.625 * 0.75
    exp = no_object(out)
    exp[0, 1, 0:4, 1, 0] = torch.tensor([s * 0.2, s * -0.2, s * -0.1, s * 0.2])  # one positive class: kept
    exp[0, 1, 4, 1, 0] = 1 - 0.7
    exp[0, 1, 5:, 1, 0] = torch.tensor([0.1 - 0.3, 0.9 - 0.6])
    # a0 (16x16): tw = log(.5·64/16) = log 2, th = log(.75·64/16) = log 3; averages_yolo_deltas divides by 2
    exp[0, 0, 0:4, 1, 0] = torch.tensor([s * 0.1, s * -0.1, s * math.log(2), s * math.log(3)]) / 2
    exp[0, 0, 4, 1, 0] = 1 - 0.4
    exp[0, 0, 5:, 1, 0] = torch.tensor([0.1 - 0.05, 0.9 - 0.2])
    torch.testing.assert_close(d, exp, rtol=1e-5, atol=1e-6)
    assert ld.count == 2


def test_best_anchor_is_chosen_among_all_layers_anchors() -> None:
    small, big = yolo(mask="0,1"), yolo(mask="2", index=9)
    out1, out2 = baseline(), baseline(n=1)
    b9 = [0, 0.75, 0.25, 0.9, 0.9]  # best anchor a2 (IoU .81/.8789 against .375/.81 for a1)
    lds = detection_deltas([small, big], [out1.reshape(1, -1, 2, 2), out2.reshape(1, -1, 2, 2)], truths([T, b9]), 64, 64)
    assert [ld.count for ld in lds] == [1, 1]
    d2 = lds[1].delta.reshape(out2.shape)
    # b9 in cell (i=1, j=0) of the a2 layer: tx = .75·2 - 1 = .5, tw = log(.9·64/60)
    s = (2 - 0.81) * 0.75
    want = torch.tensor([s * 0.0, s * 0.0, s * math.log(0.9 * 64 / 60), s * math.log(0.9 * 64 / 60)])
    torch.testing.assert_close(d2[0, 0, 0:4, 0, 1], want)
    assert float(lds[0].delta.reshape(out1.shape)[0, 1, 4, 1, 0]) == pytest.approx(1 - 0.4)


def test_two_truths_on_one_anchor_alexeyab_adds_pjreddie_keeps_the_last() -> None:
    t2 = [0, 0.32, 0.72, 0.5, 0.75]  # same cell, same best anchor a1, class 0
    out = baseline()
    assigned_slot(out)
    ld, d = deltas(yolo(), out, truths([T, t2]))
    s = 1.625 * 0.75
    # box deltas accumulate: tx = .6 and .64, ty = .4 and .44
    want = torch.tensor([s * (0.6 - 0.4) + s * (0.64 - 0.4), s * (0.4 - 0.6) + s * (0.44 - 0.6), 2 * s * -0.1, 2 * s * 0.2])
    torch.testing.assert_close(d[0, 1, 0:4, 1, 0], want)
    # classes: T sets the row (-.3, .4); t2 finds delta[class 0] set, so it only switches class 0 on: 1 - .3
    torch.testing.assert_close(d[0, 1, 5:, 1, 0], torch.tensor([0.7, 0.4]))
    assert ld.count == 2 and ld.rewritten_bbox == 1
    ld, d = deltas(yolo(flavor="pjreddie"), out, truths([T, t2]))
    s = 1.625  # pjreddie: no iou_normalizer, and delta_yolo_box assigns
    torch.testing.assert_close(d[0, 1, 0:4, 1, 0], torch.tensor([s * 0.24, s * -0.16, s * -0.1, s * 0.2]))
    torch.testing.assert_close(d[0, 1, 5:, 1, 0], torch.tensor([0.7, 0.4]))
    assert ld.line().startswith("Region 5 Avg IOU: ") and ld.line().endswith(",  count: 2")


def raw_input(layer: Yolo | Region, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c, h, w = layer.in_shape
    return (torch.randn(1, c, h, w, generator=g) * 1.5).requires_grad_()


def test_scale_x_y_delta_and_gradient_pass_the_logistic_unchanged() -> None:
    layer = yolo("scale_x_y=1.1\n")
    z = raw_input(layer)
    out = layer(z, [])
    loss, (ld,) = detection_loss([layer], [out], truths([T]), 64, 64)
    v = z.detach().reshape(1, 2, C5, 2, 2)[0, 1, :, 1, 0]
    x = 1 / (1 + math.exp(-float(v[0]))) * 1.1 - (1.1 - 1) / 2  # the layer's output: σ·s - (s-1)/2
    s = 1.625 * 0.75
    assert float(ld.delta.reshape(1, 2, C5, 2, 2)[0, 1, 0, 1, 0]) == pytest.approx(s * (0.6 - x), rel=1e-5)
    loss.backward()
    # backward_yolo_layer adds the delta to the input's delta as it is: neither σ' nor scale_x_y
    torch.testing.assert_close(z.grad, -ld.delta)
    assert float(loss.detach()) == pytest.approx(ld.cost / 1, rel=1e-6)  # get_network_cost / batch


def test_new_coords_targets_and_gradient() -> None:
    layer = yolo("new_coords=1\n")
    z = raw_input(layer, seed=1)
    out = layer(z, [])
    assert torch.equal(out, z)  # new_coords: no activation
    loss, (ld,) = detection_loss([layer], [out], truths([T]), 64, 64)
    v = z.detach().reshape(1, 2, C5, 2, 2)[0, 1, :, 1, 0]
    # tw = sqrt(truth.w·w / (4·anchor_w)) = sqrt(.5·64/128) = .5; th = sqrt(.75·64/192) = .5
    s = 1.625 * 0.75
    want = torch.tensor([s * (0.6 - v[0]), s * (0.4 - v[1]), s * (0.5 - v[2]), s * (0.5 - v[3])])
    torch.testing.assert_close(ld.delta.reshape(1, 2, C5, 2, 2)[0, 1, 0:4, 1, 0], want)
    loss.backward()
    torch.testing.assert_close(z.grad, -ld.delta)
    # with scale_x_y darknet scales x, y even under new_coords (the scal_add after the if/else); the forward
    # here returns them raw, so the loss applies it: delta_x = scale·(tx - (x·2 - .5))
    layer = yolo("new_coords=1\nscale_x_y=2.0\n")
    (ld,) = detection_deltas([layer], [layer(z.detach(), [])], truths([T]), 64, 64)
    assert float(ld.delta.reshape(1, 2, C5, 2, 2)[0, 1, 0, 1, 0]) == pytest.approx(s * (0.6 - (2 * float(v[0]) - 0.5)), rel=1e-5)


REGION = "[net]\n[region]\nanchors=1,1.5, 0.5,0.5\nnum=2\nclasses=2\ncoords=4\nsoftmax=1\nthresh=0.6\nobject_scale=5\n"


def region(opts: str = "", flavor: str = "pjreddie") -> Region:
    return Region(parse_cfg(REGION + opts)[1], BuildContext(flavor, 7, (2 * C5, 2, 2), [], 64, 64))


def region_outputs() -> torch.Tensor:
    out = baseline()
    out[:, :, 5], out[:, :, 6] = 0.3, 0.7  # softmax outputs
    out[0, 0, 2:4, 1, 0] = -1.0  # anchor 0 at T's cell predicts a shape e^-1 too small
    out[0, 1, 0:4, 1, 0] = torch.tensor([0.62, 0.4, math.log(2), math.log(3)])  # anchor 1 predicts T's shape
    return out


def test_region_deltas_pick_the_anchor_by_predicted_shape() -> None:
    out = region_outputs()
    truth = truths([[0] + T[1:]])  # class 0
    ld, d = deltas(region(), out, truth)
    exp = no_object(out)  # noobject_scale·(0 - obj); no prediction but the matched one overlaps T above .6
    # best anchor by the *predicted* shape: anchor 1 (IoU ~1) over anchor 0 (IoU e^-2)
    s = 1.625  # coord_scale·(2 - w·h)
    # anchors in grid cells: tw = log(.5·2/.5) = log 2, th = log(.75·2/.5) = log 3
    exp[0, 1, 0:4, 1, 0] = torch.tensor([s * (0.6 - 0.62), s * (0.4 - 0.4), 0.0, 0.0])
    exp[0, 1, 4, 1, 0] = 5 * (1 - 0.4)  # object_scale·(1 - obj)
    exp[0, 1, 5:, 1, 0] = torch.tensor([1 - 0.3, 0 - 0.7])  # class_scale·(one-hot - p)
    torch.testing.assert_close(d, exp, rtol=1e-5, atol=1e-6)
    iou = iou_by_hand((0.31, 0.7, 0.5, 0.75), T[1:])  # .49·.75/(.375 + .375 - .3675)
    assert ld.count == 1 and ld.tot_iou == pytest.approx(iou, rel=1e-5)
    assert ld.cost == pytest.approx(float((exp**2).sum()), rel=1e-5)
    assert ld.line() == f"Region Avg IOU: {iou:f}, Class: 0.300000, Obj: 0.400000, No Obj: 0.400000, Avg Recall: 1.000000,  count: 1"

    # bias_match=1: the anchors' own shapes choose, anchor 0 (1 x 1.5 cells = T exactly); rescore: target = IoU
    ld, d = deltas(region("bias_match=1\nrescore=1\n"), out, truth)
    exp = no_object(out)
    exp[0, 1, 4, 1, 0] = 0.0  # anchor 1's box overlaps T by .96 > thresh
    exp[0, 0, 0:4, 1, 0] = torch.tensor([s * 0.1, s * -0.1, s * (0 + 1), s * (0 + 1)])  # tw = log(.5·2/1) = 0
    iou0 = math.exp(-2)  # anchor 0's predicted box: T's shape times e^-1, inside T
    exp[0, 0, 4, 1, 0] = 5 * (iou0 - 0.4)
    exp[0, 0, 5:, 1, 0] = torch.tensor([0.7, -0.7])
    torch.testing.assert_close(d, exp, rtol=1e-5, atol=1e-6)


def test_region_prior_during_the_first_12800_images() -> None:
    out = region_outputs()
    _, d = deltas(region(), out, truths([[0] + T[1:]]), seen=0)
    # every unmatched box pulled to its anchor: .01·(.5 - x, .5 - y, 0 - w, 0 - h)
    torch.testing.assert_close(d[0, 0, 0:4, 1, 0], torch.tensor([0.0, 0.0, 0.01, 0.01]), atol=1e-7, rtol=1e-5)
    _, d = deltas(region(), out, truths([[0] + T[1:]]), seen=12800)
    assert float(d[0, 0, 2, 1, 0]) == 0.0


def test_region_gradient_applies_the_logistic_derivative_to_x_y_and_objectness_only() -> None:
    layer = region()
    z = raw_input(layer, seed=2)
    out = layer(z, [])
    loss, (ld,) = detection_loss([layer], [out], truths([[0] + T[1:]]), 64, 64)
    loss.backward()
    o = out.detach().reshape(1, 2, C5, 2, 2)
    slope = torch.ones_like(o)
    slope[:, :, [0, 1, 4]] = o[:, :, [0, 1, 4]] * (1 - o[:, :, [0, 1, 4]])  # backward_region_layer_gpu
    torch.testing.assert_close(z.grad, -(ld.delta.reshape(o.shape) * slope).reshape(z.shape))


def test_non_finite_deltas_name_the_layer_and_the_cause() -> None:
    out = baseline()
    flat = truths([[1, 0.3, 0.7, 0.0, 0.75]])  # tw = log(0)
    with pytest.raises(CnnlabError, match=r"\[yolo\] layer 5: the IoU or the deltas are not finite .* zero width or height"):
        deltas(yolo(), out, flat)
    out[0, 1, 2, 0, 1] = math.nan  # a prediction no truth is assigned to: darknet would go on
    with pytest.raises(CnnlabError, match=r"\[yolo\] layer 5: .*diverged.*burn_in"):
        deltas(yolo(), out, truths([T]))


def test_truths_past_max_and_classes_out_of_range_are_skipped() -> None:
    out = baseline()
    ld, _ = deltas(yolo("max=1\n"), out, truths([T, [0, 0.8, 0.2, 0.5, 0.75]]))
    assert ld.count == 1
    ld, _ = deltas(yolo(), out, truths([[5] + T[1:]]))
    assert ld.count == 0 and ld.skipped_truths == 1


def test_truth_thresh_trains_a_close_prediction_as_a_match() -> None:
    layer = yolo("truth_thresh=0.9\n")
    out = baseline()
    out[0, 0, :, 1, 0] = torch.tensor([0.62, 0.4, math.log(2), math.log(3), 0.4, 0.3, 0.1])  # IoU .96 with T
    ld, d = deltas(layer, out, truths([T]))
    s = 1.625 * 0.75
    # with anchor a0: tx = .6, ty = .4, tw = log(.5·64/16) = log 2, th = log 3
    torch.testing.assert_close(d[0, 0, 0:4, 1, 0], torch.tensor([s * (0.6 - 0.62), 0.0, 0.0, 0.0]), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(d[0, 0, 4:, 1, 0], torch.tensor([1 - 0.4, 0 - 0.3, 1 - 0.1]))
    assert ld.count == 1 and ld.total_bbox == 2  # the match is not counted in count, only in total_bbox


# -- against darknet itself: reference/yolo_loss.npz holds what the real layers computed (yolo_loss_ref.py)

_REF: dict = {}


def _reference() -> dict:
    if not _REF:
        _REF.update(load_reference())
        assert list(_REF["names"]) == [c.name for c in REF_CASES], "reference/yolo_loss.npz is stale: rerun yolo_loss_ref.py"
    return _REF


@pytest.mark.parametrize("i", range(len(REF_CASES)), ids=[c.name for c in REF_CASES])
def test_deltas_equal_darknets_own(i: int) -> None:
    case, ref = REF_CASES[i], _reference()
    layer, out, ld = ref_ours(case, ref[f"{i}_raw"], ref[f"{i}_truth"])
    cost, total_bbox, rewritten = (float(v) for v in ref[f"{i}_tail"])
    delta = ld.delta
    if case.kind == "region" and case.flavor == "alexeyab":  # its delta carries σ' for x, y, objectness
        o = out.detach().reshape(out.shape[0], layer.n, -1, *out.shape[2:])
        slope = torch.ones_like(o)
        slope[:, :, [0, 1, 4]] = o[:, :, [0, 1, 4]] * (1 - o[:, :, [0, 1, 4]])
        delta = (delta.reshape(o.shape) * slope).reshape(out.shape)
    torch.testing.assert_close(delta, torch.from_numpy(ref[f"{i}_delta"]), atol=2e-6, rtol=1e-5)
    assert ld.cost == pytest.approx(cost, rel=2e-6)
    if case.kind == "yolo" and case.flavor == "alexeyab":
        assert (ld.total_bbox, ld.rewritten_bbox) == (total_bbox, rewritten)
