"""Training deltas of darknet's [region] layer (YOLOv2; region_layer.c: forward_region_layer).

pjreddie's formulas, on the layer's activated output (logistic x, y, objectness; softmax or logistic
classes): objectness to 0 unless a truth overlaps above ``thresh``; during the first 12800 images
every box is pulled towards its anchor (scale .01); each truth trains the anchor of its cell whose
*predicted* shape fits it best (the anchor's own shape with ``bias_match=1``), with box deltas scaled
by ``coord_scale·(2 - w·h)``, objectness to 1 (to the IoU with ``rescore=1``) times
``object_scale`` and one-hot classes times ``class_scale``. Writes are assignments: the last truth on
an anchor wins.

AlexeyAB's region_layer.c is the older layer: the box scale is ``coord_scale`` alone, and it
multiplies the x, y and objectness deltas by the logistic's derivative itself. The delta returned
here is w.r.t. the activated output in both cases (the layer's autograd applies that derivative, as
pjreddie's backward_region_layer_gpu does); the AlexeyAB cost is computed on the multiplied deltas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.darknet.box_iou import best_truths, box_iou
from cnnlab.darknet.layers import Region
from cnnlab.darknet.loss_stats import LayerDelta, check_finite, first_last, valid_truths
from cnnlab.errors import CnnlabError

PRIOR_IMAGES = 12800  # region_layer.c: ``if(*(net.seen) < 12800)``


def _pred(o: torch.Tensor, aw: torch.Tensor, ah: torch.Tensor, i: torch.Tensor, j: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """get_region_box: anchors are in grid cells."""
    bw = (torch.exp(o[:, 2].double()) * aw / w).float()  # exp() is double in C
    bh = (torch.exp(o[:, 3].double()) * ah / h).float()
    return torch.stack([(i + o[:, 0]) / w, (j + o[:, 1]) / h, bw, bh], -1)


def _box(o: torch.Tensor, truth: torch.Tensor, aw: torch.Tensor, ah: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
         w: int, h: int, scale: torch.Tensor | float) -> torch.Tensor:
    """delta_region_box: (K, 4)."""
    t = torch.stack([truth[:, 0] * w - i, truth[:, 1] * h - j, torch.log(truth[:, 2] * w / aw), torch.log(truth[:, 3] * h / ah)], -1)
    s = scale[:, None] if isinstance(scale, torch.Tensor) else scale
    return s * (t - o[:, :4])


def region_delta(layer: Region, output: torch.Tensor, truth: torch.Tensor, seen: int | None) -> LayerDelta:
    """forward_region_layer's training part for one [region] layer."""
    if layer.coords != 4:
        raise CnnlabError(f"[region] layer {layer.index}: training with coords={layer.coords} (masks) is not supported; use coords=4")
    b, _, h, w = output.shape
    n, c, k1 = layer.n, layer.classes, 5 + layer.classes
    o = output.detach().float().reshape(b, n, k1, h, w).permute(0, 1, 3, 4, 2).reshape(-1, k1)
    d = torch.zeros_like(o)
    truth = truth.detach().float().to(o.device)
    valid, skipped = valid_truths(truth, c, layer.max_boxes)
    tbox, tcls = truth[..., 1:5], truth[..., 0].trunc().long().clamp(min=0)
    anchors = torch.tensor((list(layer.anchors) + [0.5] * (2 * n))[: 2 * n], dtype=torch.float32, device=o.device).view(n, 2)
    s = torch.arange(o.shape[0], device=o.device)
    m, j, i = (s // (h * w)) % n, (s // w) % h, s % w
    pred = _pred(o, anchors[m, 0], anchors[m, 1], i, j, w, h)
    best = best_truths(pred.view(b, -1, 4), tbox, valid)[0].reshape(-1)
    obj = o[:, 4]
    d[:, 4] = layer.noobject_scale * ((1.0 if layer.background else 0.0) - obj)
    d[:, 4] = torch.where(best > layer.thresh, torch.zeros_like(obj), d[:, 4])
    if seen is not None and seen < PRIOR_IMAGES:
        prior = torch.stack([(i + 0.5) / w, (j + 0.5) / h, anchors[m, 0] / w, anchors[m, 1] / h], -1)
        d[:, :4] = _box(o, prior, anchors[m, 0], anchors[m, 1], i, j, w, h, 0.01)
    stats = _truths(d, o, tbox, tcls, valid, anchors, layer, (b, n, h, w))
    delta = d.reshape(b, n, h, w, k1).permute(0, 1, 4, 2, 3).reshape(output.shape)
    sq = d
    if layer.flavor == "alexeyab":  # its deltas carry the logistic's derivative for x, y, objectness
        sig = torch.ones_like(sq)
        sig[:, [0, 1, 4]] = o[:, [0, 1, 4]] * (1 - o[:, [0, 1, 4]])
        sq = sq * sig
    loss = float(torch.linalg.vector_norm(sq)) ** 2
    check_finite("region", layer.index, delta, loss + stats["tot_iou"] + float(o.sum()), output.detach(), truth, valid)
    return LayerDelta(
        index=layer.index, kind="region", flavor=layer.flavor, delta=delta, cost=loss, loss=loss,
        class_loss=float(torch.linalg.vector_norm(sq[:, 4:])) ** 2, batch=b, cells=b * n * h * w, count=int(stats["count"]),
        class_count=int(stats["count"]), tot_iou=stats["tot_iou"], tot_cat=stats["tot_cat"], tot_obj=stats["tot_obj"],
        tot_anyobj=float(obj.sum()), n_recall50=int(stats["recall50"]), total_bbox=int(stats["count"]),
        rewritten_bbox=int(stats["rewritten"]), skipped_truths=skipped,
    )


def _truths(d: torch.Tensor, o: torch.Tensor, tbox: torch.Tensor, tcls: torch.Tensor, valid: torch.Tensor,
            anchors: torch.Tensor, layer: Region, dims: tuple[int, int, int, int]) -> dict[str, float]:
    """The truth loop: best anchor of the centre cell, then box, objectness and class deltas."""
    n, h, w = dims[1:]
    bi, ti = torch.nonzero(valid, as_tuple=True)  # image-major, truth order within an image
    truth, cls = tbox[bi, ti], tcls[bi, ti]
    i = (truth[:, 0] * w).long().clamp(0, w - 1)
    j = (truth[:, 1] * h).long().clamp(0, h - 1)
    cells = ((bi[:, None] * n + torch.arange(n, device=d.device)) * h + j[:, None]) * w + i[:, None]  # (K, n)
    oc = o[cells]  # (K, n, 5+C)
    if layer.bias_match:
        shape_w, shape_h = (anchors[:, 0] / w).expand_as(oc[..., 2]), (anchors[:, 1] / h).expand_as(oc[..., 3])
    else:
        shape_w, shape_h = torch.exp(oc[..., 2]) * anchors[:, 0] / w, torch.exp(oc[..., 3]) * anchors[:, 1] / h
    z = torch.zeros_like(shape_w)
    shift = torch.stack([z, z, truth[:, None, 2].expand_as(z), truth[:, None, 3].expand_as(z)], -1)
    best_n = box_iou(torch.stack([z, z, shape_w, shape_h], -1), shift).argmax(-1)
    slot = cells.gather(1, best_n[:, None])[:, 0]
    os_ = o[slot]
    aw, ah = anchors[best_n, 0], anchors[best_n, 1]
    iou = box_iou(_pred(os_, aw, ah, i, j, w, h), truth)
    scale = layer.coord_scale * ((2 - truth[:, 2] * truth[:, 3]) if layer.flavor == "pjreddie" else torch.ones_like(iou))
    box = _box(os_, truth, aw, ah, i, j, w, h, scale)
    first, last = first_last(slot)
    rewritten = int(((d[slot, :4] != 0).any(1) | ~first).sum())
    d[slot[last], :4] = box[last]
    target = torch.zeros_like(iou) if layer.background else iou if layer.rescore else torch.ones_like(iou)
    d[slot[last], 4] = layer.object_scale * (target - os_[:, 4])[last]
    tot_cat = _classes(d, o, slot, cls, first, last, layer)
    return {
        "count": int(slot.numel()), "tot_iou": float(iou.sum()), "tot_obj": float(os_[:, 4].sum()),
        "recall50": int((iou > 0.5).sum()), "tot_cat": tot_cat, "rewritten": rewritten,
    }


def _classes(d: torch.Tensor, o: torch.Tensor, slot: torch.Tensor, cls: torch.Tensor, first: torch.Tensor,
             last: torch.Tensor, layer: Region) -> float:
    """delta_region_class without a tree; returns the summed true-class output it counts."""
    c = layer.classes
    rows = layer.class_scale * (F.one_hot(cls, c).to(o.dtype) - o[slot, 5:])
    single = layer.flavor == "pjreddie" and not layer.softmax  # ``if (delta[index] && tag)``
    if not single:
        d[slot[last], 5:] = rows[last]
        return float(o[slot, 5 + cls].sum())
    simple = first & last
    d[slot[simple], 5:] = rows[simple]
    tot = float(o[slot[simple], 5 + cls[simple]].sum())
    for k in torch.nonzero(~simple)[:, 0].tolist():  # one anchor, several truths: replay in order
        sk, ck = slot[k], cls[k]
        if d[sk, 5] != 0:
            d[sk, 5 + ck] = layer.class_scale * (1 - o[sk, 5 + ck])
        else:
            d[sk, 5:] = rows[k]
            tot += float(o[sk, 5 + ck])
    return tot
