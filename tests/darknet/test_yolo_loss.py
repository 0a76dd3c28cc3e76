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
    assert ld.recall50 == 2 and ld.recall75 == 0
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
