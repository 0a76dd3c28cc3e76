"""Training deltas of darknet's [yolo] layer (yolo_layer.c: forward_yolo_layer), vectorised in torch.

For every prediction, forward_yolo_layer (AlexeyAB 59596d7; pjreddie f6afaab where it differs):
  1. objectness is pushed to 0 (``obj_normalizer·(0 - obj)``) unless the predicted box overlaps a
     truth by more than ``ignore_thresh`` (AlexeyAB: and some class output is above 0.25,
     compare_yolo_class); above ``truth_thresh`` it is trained as a match (rarely used: default 1);
  2. each truth goes to the cell holding its centre and to the anchor, among *all* ``num`` anchors of
     the cfg line, whose shape fits it best; it trains this layer only if that anchor is in ``mask``.
     AlexeyAB also trains every other masked anchor whose shape IoU is above ``iou_thresh``.
     There: box delta (delta_yolo_box: mse on (t_x, t_y, t_w, t_h) scaled by ``2 - w·h``, or the
     gradient of IoU/GIoU/DIoU/CIoU from dx_box_iou, times ``iou_normalizer``), objectness to 1,
     classes to one-hot (delta_yolo_class, with ``label_smooth_eps``, focal loss, counters_per_class);
  3. AlexeyAB with ``iou_thresh < 1`` divides each box delta by the number of classes trained there.
Order matters where two truths land on the same anchor: AlexeyAB adds the box deltas, pjreddie keeps
the last; the class of the second truth is only switched on. Those rare slots are replayed in order.

The delta is w.r.t. the activated output; darknet's backward passes it to the layer input without
the logistic's derivative, which the layer's forward reproduces (layers._pass_grad), so
:func:`detection_loss` is the surrogate ``-(delta·output).sum()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.darknet.box_iou import (
    best_truths,
    box_iou,
    box_iou_kind,
    box_ious,
    dx_box_iou,
)
from cnnlab.darknet.layers import Region, Yolo
from cnnlab.darknet.loss_stats import LayerDelta, check_finite, first_last, valid_truths
from cnnlab.darknet.region_loss import region_delta
from cnnlab.errors import CnnlabError

__all__ = ["LayerDelta", "detection_deltas", "detection_loss", "yolo_delta"]


@dataclass
class _Head:
    """A [yolo] layer's constants for one batch (tensors on the output's device)."""

    layer: Yolo
    b: int
    h: int
    w: int
    net_w: int
    net_h: int
    anchors: torch.Tensor  # (total, 2) in pixels of the network input
    slot_of: torch.Tensor  # (total,) position of an anchor in ``mask``, -1 if not there
    cm: torch.Tensor | None  # (C,) counters_per_class multipliers
    ab: bool

    @property
    def n(self) -> int:
        return self.layer.n

    @property
    def c(self) -> int:
        return self.layer.classes


def _head(layer: Yolo, out: torch.Tensor, net_w: int, net_h: int) -> _Head:
    dev = out.device
    vals = list(layer.anchors[: 2 * layer.total]) + [0.5] * max(0, 2 * layer.total - len(layer.anchors))
    anchors = torch.tensor(vals, dtype=torch.float32, device=dev).view(-1, 2)
    if max(layer.mask) >= layer.total:
        raise CnnlabError(f"[yolo] layer {layer.index}: mask uses anchor {max(layer.mask)} but num={layer.total}; set num= to the number of anchors")
    slot = [-1] * layer.total
    for m, a in enumerate(layer.mask):  # int_index: the first position wins
        if slot[a] < 0:
            slot[a] = m
    slot_of = torch.tensor(slot, dtype=torch.long, device=dev)
    cm = torch.tensor(layer.classes_multipliers, dtype=torch.float32, device=dev) if layer.classes_multipliers else None
    b, _, h, w = out.shape
    return _Head(layer, b, h, w, net_w, net_h, anchors, slot_of, cm, layer.flavor == "alexeyab")


def _pred_boxes(o: torch.Tensor, anchor: torch.Tensor, i: torch.Tensor, j: torch.Tensor, hd: _Head) -> torch.Tensor:
    """get_yolo_box for rows ``o`` (K, 5+C) at cells (i, j) with anchors (K, 2): (K, 4) relative boxes."""
    x = (i + o[:, 0]) / hd.w
    y = (j + o[:, 1]) / hd.h
    if hd.layer.new_coords:
        bw = o[:, 2] * o[:, 2] * 4 * anchor[:, 0] / hd.net_w
        bh = o[:, 3] * o[:, 3] * 4 * anchor[:, 1] / hd.net_h
    else:
        bw = (torch.exp(o[:, 2].double()) * anchor[:, 0] / hd.net_w).float()  # exp() is double in C
        bh = (torch.exp(o[:, 3].double()) * anchor[:, 1] / hd.net_h).float()
    return torch.stack([x, y, bw, bh], -1)


def _slot_cells(hd: _Head, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(m, j, i) of every slot of the flat (B·n·H·W) layout."""
    s = torch.arange(hd.b * hd.n * hd.h * hd.w, device=dev)
    return (s // (hd.h * hd.w)) % hd.n, (s // hd.w) % hd.h, s % hd.w


def _box_delta(o: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor, anchor: torch.Tensor,
               i: torch.Tensor, j: torch.Tensor, norm: torch.Tensor, hd: _Head) -> torch.Tensor:
    """delta_yolo_box for K rows: (K, 4) deltas of x, y, w, h."""
    ly = hd.layer
    if ly.iou_loss == "mse":
        scale = 2 - truth[:, 2] * truth[:, 3]
        tx = truth[:, 0] * hd.w - i
        ty = truth[:, 1] * hd.h - j
        if ly.new_coords:
            tw = torch.sqrt(truth[:, 2] * hd.net_w / (4 * anchor[:, 0]))
            th = torch.sqrt(truth[:, 3] * hd.net_h / (4 * anchor[:, 1]))
        else:
            tw = torch.log(truth[:, 2] * hd.net_w / anchor[:, 0])
            th = torch.log(truth[:, 3] * hd.net_h / anchor[:, 1])
        t = torch.stack([tx, ty, tw, th], -1)
        return (scale * norm)[:, None] * (t - o[:, :4])
    fixed = pred.clone()  # "avoid nan in dx_box_iou"
    fixed[:, 2:] = torch.where(fixed[:, 2:] == 0, torch.ones_like(fixed[:, 2:]), fixed[:, 2:])
    dx, dy, dw, dh = dx_box_iou(fixed, truth, ly.iou_loss)
    if not ly.new_coords:
        dw = dw * torch.exp(o[:, 2])
        dh = dh * torch.exp(o[:, 3])
    d = torch.stack([dx, dy, dw, dh], -1) * norm[:, None]
    d = torch.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)  # fix_nan_inf
    if math.isfinite(ly.max_delta):
        d = d.clamp(-ly.max_delta, ly.max_delta)
    return d


def _class_rows(o_cls: torch.Tensor, prev: torch.Tensor, cls: torch.Tensor, hd: _Head) -> torch.Tensor:
    """delta_yolo_class on fresh rows: (R, C) class deltas for truths of class ``cls``."""
    ly = hd.layer
    onehot = F.one_hot(cls, hd.c).to(o_cls.dtype)
    if ly.focal_loss:  # alpha 0.5, gamma 2, from the true class's output
        pt = o_cls.gather(1, cls[:, None])[:, 0] + 1e-15
        grad = -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)
        return (onehot - o_cls) * (0.5 * grad)[:, None]
    y = onehot * (1 - ly.label_smooth_eps) + 0.5 * ly.label_smooth_eps if ly.label_smooth_eps else onehot
    r = y - o_cls
    r = torch.where(torch.isfinite(r), r, prev)
    if hd.cm is not None:
        r = r * torch.where(onehot.bool(), (hd.cm[cls] * ly.cls_normalizer)[:, None], torch.ones_like(r))
    return r


def _class_single(o_c: torch.Tensor, prev: torch.Tensor, cls: torch.Tensor, hd: _Head) -> torch.Tensor:
    """delta_yolo_class when the class delta is already set: only that class is (re)written."""
    eps = hd.layer.label_smooth_eps
    y = (1 - eps) + 0.5 * eps if eps else 1.0
    r = y - o_c
    r = torch.where(torch.isfinite(r), r, prev)
    return r * hd.cm[cls] if hd.cm is not None else r


def _write_classes(d: torch.Tensor, o: torch.Tensor, slot: torch.Tensor, cls: torch.Tensor, hd: _Head) -> None:
    """delta_yolo_class for assignments in order; slots written twice are replayed one by one."""
    if slot.numel() == 0:
        return
    first, last = first_last(slot)
    probe = cls if hd.ab else torch.zeros_like(cls)  # pjreddie tests the delta of class 0
    already = d[slot, 5 + probe] != 0
    simple = first & last & ~already
    s = slot[simple]
    d[s, 5:] = _class_rows(o[s, 5:], d[s, 5:], cls[simple], hd)
    for k in torch.nonzero(~simple)[:, 0].tolist():
        sk, ck = slot[k], cls[k]
        if d[sk, 5 + (ck if hd.ab else 0)] != 0:
            d[sk, 5 + ck] = _class_single(o[sk, 5 + ck], d[sk, 5 + ck], ck, hd)
        else:
            d[sk, 5:] = _class_rows(o[sk, 5:][None], d[sk, 5:][None], ck[None], hd)[0]


@dataclass
class _Assign:
    """Truth-to-anchor assignments of a batch, in darknet's processing order."""

    slot: torch.Tensor  # (K,) flat slot index
    anchor: torch.Tensor  # (K,) anchor index among all ``num``
    i: torch.Tensor
    j: torch.Tensor
    truth: torch.Tensor  # (K, 4)
    cls: torch.Tensor  # (K,)


def _assignments(tbox: torch.Tensor, tcls: torch.Tensor, valid: torch.Tensor, hd: _Head) -> _Assign:
    """The best anchor of each truth (shape IoU over all anchors) if masked here, plus iou_thresh's extras."""
    m = tbox.shape[1]
    total = hd.anchors.shape[0]
    zeros = torch.zeros_like(tbox[..., :2])
    shift = torch.cat([zeros, tbox[..., 2:]], -1)[:, :, None, :]  # (B, M, 1, 4) truth_shift
    anc = torch.cat([torch.zeros_like(hd.anchors), hd.anchors / torch.tensor([hd.net_w, hd.net_h], device=tbox.device)], -1)
    best_n = box_iou(anc[None, None], shift).argmax(-1)  # (B, M): first best, 0 if none overlaps
    masked = hd.slot_of >= 0
    use = valid[..., None] & masked[best_n][..., None] & (torch.arange(total, device=tbox.device) == best_n[..., None])
    ly = hd.layer
    if ly.iou_thresh < 1.0:
        extra = box_iou_kind(anc[None, None], shift, ly.iou_thresh_kind) > ly.iou_thresh
        extra &= valid[..., None] & masked[None, None, :] & (torch.arange(total, device=tbox.device) != best_n[..., None])
        use |= extra
    bi, ti, ai = torch.nonzero(use, as_tuple=True)
    order = (bi * m + ti) * (total + 1) + torch.where(ai == best_n[bi, ti], 0, ai + 1)
    perm = torch.argsort(order)
    bi, ti, ai = bi[perm], ti[perm], ai[perm]
    truth = tbox[bi, ti]
    i = (truth[:, 0] * hd.w).long().clamp(0, hd.w - 1)  # C's (int)(x * l.w); x = 1 would overflow
    j = (truth[:, 1] * hd.h).long().clamp(0, hd.h - 1)
    slot = ((bi * hd.n + hd.slot_of[ai]) * hd.h + j) * hd.w + i
    return _Assign(slot, ai, i, j, truth, tcls[bi, ti])


def _objectness(d: torch.Tensor, o: torch.Tensor, best: torch.Tensor, hd: _Head) -> None:
    """The no-object delta and ignore_thresh (first loop of forward_yolo_layer)."""
    ly = hd.layer
    obj = o[:, 4]
    d[:, 4] = ly.obj_normalizer * (0 - obj)
    match = best
    if hd.ab:  # compare_yolo_class: any class output above 0.25
        match = torch.where((o[:, 5:] > 0.25).any(1), best, torch.zeros_like(best))
    ign = match > ly.ignore_thresh
    if ly.objectness_smooth:
        d[:, 4] = torch.where(ign, torch.maximum(d[:, 4], ly.obj_normalizer * (match - obj)), d[:, 4])
    else:
        d[:, 4] = torch.where(ign, torch.zeros_like(obj), d[:, 4])


def _truth_thresh(d: torch.Tensor, o: torch.Tensor, best: torch.Tensor, best_t: torch.Tensor,
                  tbox: torch.Tensor, tcls: torch.Tensor, pred: torch.Tensor, hd: _Head) -> int:
    """Predictions overlapping a truth above truth_thresh train as matches; returns how many."""
    ly = hd.layer
    s = torch.nonzero(best > ly.truth_thresh)[:, 0]
    if s.numel() == 0:
        return 0
    m, j, i = (v[s] for v in _slot_cells(hd, d.device))
    img = s // (hd.n * hd.h * hd.w)
    truth, cls = tbox[img, best_t[s]], tcls[img, best_t[s]]
    mult = best[s] * best[s]
    obj = o[s, 4]
    d[s, 4] = ly.obj_normalizer * ((mult if ly.objectness_smooth else 1.0) - obj)
    d[s, 5:] = _class_rows(o[s, 5:], d[s, 5:], cls, hd)
    cmul = hd.cm[cls] if hd.cm is not None else torch.ones_like(mult)
    if ly.objectness_smooth:
        d[s, 5 + cls] = cmul * (mult - o[s, 5 + cls])
    anchor = hd.anchors[torch.tensor(ly.mask, device=d.device)[m]]
    d[s, :4] += _box_delta(o[s], pred[s], truth, anchor, i, j, ly.iou_normalizer * cmul, hd)
    return int(s.numel())


def yolo_delta(layer: Yolo, output: torch.Tensor, truth: torch.Tensor, net_w: int, net_h: int) -> LayerDelta:
    """forward_yolo_layer's training part for one [yolo] layer: delta, cost and counters."""
    hd = _head(layer, output, net_w, net_h)
    c5 = 5 + hd.c
    o = output.detach().float().reshape(hd.b, hd.n, c5, hd.h, hd.w).permute(0, 1, 3, 4, 2).reshape(-1, c5)
    if layer.new_coords and layer.scale_x_y != 1.0:
        # darknet scales x, y with new_coords too (forward_yolo_layer: scal_add_cpu after the if/else);
        # cnnlab's forward leaves them raw. The gradient is the same: darknet passes it straight through.
        o = o.clone()  # o may share the output's storage (a 1x1 grid)
        o[:, 0:2] = o[:, 0:2] * layer.scale_x_y - (layer.scale_x_y - 1) / 2
    d = torch.zeros_like(o)  # (S, 5+C): one row per slot (image, anchor, row, column)
    truth = truth.detach().float().to(o.device)
    valid, skipped = valid_truths(truth, hd.c, layer.max_boxes)
    tbox, tcls = truth[..., 1:5], truth[..., 0].trunc().long().clamp(min=0)
    m, j, i = _slot_cells(hd, o.device)
    pred = _pred_boxes(o, hd.anchors[torch.tensor(layer.mask, device=o.device)[m]], i, j, hd)
    best, best_t = best_truths(pred.view(hd.b, -1, 4), tbox, valid)
    best, best_t = best.reshape(-1), best_t.reshape(-1)
    _objectness(d, o, best, hd)
    total_bbox = _truth_thresh(d, o, best, best_t, tbox, tcls, pred, hd)
    a = _assignments(tbox, tcls, valid, hd)
    stats = _apply_assignments(d, o, a, hd)
    if hd.ab and layer.iou_thresh < 1.0:  # averages_yolo_deltas
        n_cls = (d[:, 5:] > 0).sum(1)
        div = torch.where((d[:, 4] != 0) & (n_cls > 0), n_cls, torch.ones_like(n_cls))
        d[:, :4] /= div[:, None].to(d.dtype)
    delta = d.reshape(hd.b, hd.n, hd.h, hd.w, c5).permute(0, 1, 4, 2, 3).reshape(output.shape)
    ld = _layer_delta(layer, delta, d, stats, hd)
    sums = ld.loss + stats["tot_iou"] + float(o.sum())  # a non-finite output anywhere means divergence
    check_finite("yolo", layer.index, delta, sums, output.detach(), truth, valid)
    ld.total_bbox += total_bbox
    ld.skipped_truths = skipped
    ld.tot_anyobj = float(o[:, 4].sum())
    return ld


def _apply_assignments(d: torch.Tensor, o: torch.Tensor, a: _Assign, hd: _Head) -> dict[str, float]:
    """Box, objectness and class deltas of the assigned anchors; returns the counters."""
    ly = hd.layer
    s = a.slot
    cmul = hd.cm[a.cls] if hd.cm is not None else torch.ones_like(a.truth[:, 0])
    pred = _pred_boxes(o[s], hd.anchors[a.anchor], a.i, a.j, hd)
    ious = box_ious(pred, a.truth)
    box = _box_delta(o[s], pred, a.truth, hd.anchors[a.anchor], a.i, a.j, ly.iou_normalizer * cmul, hd)
    first, last = first_last(s)
    rewritten = int(((d[s, :4] != 0).any(1) | ~first).sum())
    if hd.ab:
        d[:, :4].index_put_((s,), box, accumulate=True)
    else:  # pjreddie assigns: the last truth on a slot wins
        d[s[last], :4] = box[last]
    obj = cmul * ly.obj_normalizer * (1 - o[s, 4])
    if ly.objectness_smooth:
        keep = first & (d[s, 4] == 0)
        d[s[keep], 4] = obj[keep]
    else:
        d[s[last], 4] = obj[last]
    tot_cat = float(o[s, 5 + a.cls].sum())
    _write_classes(d, o, s, a.cls, hd)
    k = int(s.numel())
    return {
        "count": k, "tot_iou": float(ious.iou.sum()), "tot_giou": float(ious.giou.sum()),
        "tot_diou": float(ious.diou.sum()), "tot_ciou": float(ious.ciou.sum()),
        "tot_iou_loss": float((1 - ious.iou).sum()), "tot_giou_loss": float((1 - ious.giou).sum()),
        "tot_cat": tot_cat, "tot_obj": float(o[s, 4].sum()), "recall50": int((ious.iou > 0.5).sum()),
        "recall75": int((ious.iou > 0.75).sum()), "rewritten": rewritten,
    }


def _layer_delta(layer: Yolo, delta: torch.Tensor, d: torch.Tensor, st: dict[str, float], hd: _Head) -> LayerDelta:
    """The cost darknet keeps in l.cost (AlexeyAB: show_details and iou_loss decide) and the counters."""
    loss = float(torch.linalg.vector_norm(d)) ** 2  # mag_array² (float sums, as darknet)
    class_loss = layer.obj_normalizer * float(torch.linalg.vector_norm(d[:, 4:])) ** 2
    count = int(st["count"])
    cost = loss
    if hd.ab and layer.show_details and layer.iou_loss != "mse":
        tot = st["tot_giou_loss"] if layer.iou_loss == "giou" else st["tot_iou_loss"]
        cost = layer.iou_normalizer * tot / max(count, 1) + class_loss
    return LayerDelta(
        index=layer.index, kind="yolo", flavor=layer.flavor, delta=delta, cost=cost, loss=loss,
        class_loss=class_loss, batch=hd.b, cells=hd.b * hd.n * hd.h * hd.w, count=count, class_count=count,
        tot_iou=st["tot_iou"], tot_giou=st["tot_giou"], tot_diou=st["tot_diou"], tot_ciou=st["tot_ciou"],
        tot_cat=st["tot_cat"], tot_obj=st["tot_obj"], n_recall50=int(st["recall50"]), n_recall75=int(st["recall75"]),
        total_bbox=count, rewritten_bbox=int(st["rewritten"]), iou_loss_kind=layer.iou_loss,
        iou_normalizer=layer.iou_normalizer, obj_normalizer=layer.obj_normalizer,
        cls_normalizer=layer.cls_normalizer, show_details=layer.show_details,
    )


def detection_deltas(layers: Sequence[Yolo | Region], outputs: Sequence[torch.Tensor], truth: torch.Tensor,
                     net_w: int, net_h: int, *, seen: int | None = None) -> list[LayerDelta]:
    """Darknet's deltas of every detection layer for one batch (computed without autograd).

    ``outputs`` are the layers' forward outputs (B, n*(k+1+C), H, W); ``truth`` is (B, M, 5)
    ``[cls, xc, yc, w, h]`` relative to the network input, padded with cls = -1; ``net_w``/``net_h``
    the input size of this batch (multi-scale). ``seen`` (images trained so far) switches on [region]'s
    pull of every box towards its anchor during the first 12800 images; None = past that.
    """
    found = []
    with torch.no_grad():
        for layer, out in zip(layers, outputs, strict=True):
            if isinstance(layer, Yolo):
                found.append(yolo_delta(layer, out, truth, net_w, net_h))
            elif isinstance(layer, Region):
                found.append(region_delta(layer, out, truth, seen))
            else:
                raise CnnlabError(f"layer {getattr(layer, 'index', '?')} is a [{layer.kind}], not a [yolo] or [region]: it has no detection loss")
    return found


def detection_loss(layers: Sequence[Yolo | Region], outputs: Sequence[torch.Tensor], truth: torch.Tensor,
                   net_w: int, net_h: int, *, seen: int | None = None) -> tuple[torch.Tensor, list[LayerDelta]]:
    """A scalar whose gradient w.r.t. each output is ``-delta``, and the layers' deltas and counters.

    Its value is darknet's loss for the batch (get_network_cost / batch: the mean layer cost divided
    by the batch size); its gradient is darknet's delta summed over layers, not divided by the batch
    (darknet divides the learning rate by the batch instead).
    """
    if not layers:
        raise CnnlabError("detection_loss needs the network's [yolo]/[region] layers; this network has none")
    deltas = detection_deltas(layers, outputs, truth, net_w, net_h, seen=seen)
    surrogate = torch.stack([-(ld.delta.to(out.dtype) * out).sum() for ld, out in zip(deltas, outputs)]).sum()
    value = sum(ld.cost for ld in deltas) / len(deltas) / max(truth.shape[0], 1)
    return surrogate - surrogate.detach() + value, deltas
