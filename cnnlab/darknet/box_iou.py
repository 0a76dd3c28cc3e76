"""Darknet's box overlaps and the IoU-loss gradient (src/box.c), vectorised over boxes.

A box is a tensor ``(..., 4)`` of ``[x, y, w, h]`` (centre, size; any unit as long as both boxes use
it). Every function follows box.c's order of operations and its edge cases: an IoU is 0 when the
intersection or the union is 0, the GIoU/DIoU/CIoU fall back to the IoU when the enclosing box is
empty, DIoU's distance term has box.c's exponent 0.6, and :func:`dx_box_iou` keeps the unclamped
intersection and corner tests of dx_box_iou (its sign convention: the gradient that *raises* the
IoU, which is darknet's delta).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

KINDS = ("iou", "giou", "diou", "ciou")
_CHUNK = 1 << 22  # elements of one (images, predictions, truths) IoU block in best_truths


class Ious(NamedTuple):
    iou: torch.Tensor
    giou: torch.Tensor
    diou: torch.Tensor
    ciou: torch.Tensor


def _edges(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(left, right, top, bottom) of ``[x, y, w, h]`` boxes (to_tblr)."""
    x, y, w, h = b.unbind(-1)
    return x - w / 2, x + w / 2, y - h / 2, y + h / 2


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """box_intersection: overlap area, 0 when the boxes do not overlap on either axis."""
    al, ar, at, ab = _edges(a)
    bl, br, bt, bb = _edges(b)
    ow = torch.minimum(ar, br) - torch.maximum(al, bl)  # overlap()
    oh = torch.minimum(ab, bb) - torch.maximum(at, bt)
    return torch.where((ow < 0) | (oh < 0), torch.zeros_like(ow), ow * oh)


def _iou_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inter = _intersection(a, b)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    ok = (inter != 0) & (union != 0)
    return torch.where(ok, inter / _nonzero(union), torch.zeros_like(inter)), union


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """box_iou: intersection over union, 0 when either is 0 (boxes broadcast)."""
    return _iou_union(a, b)[0]


def _enclosing(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Width and height of the smallest box holding both (box_c)."""
    al, ar, at, ab = _edges(a)
    bl, br, bt, bb = _edges(b)
    return torch.maximum(ar, br) - torch.minimum(al, bl), torch.maximum(ab, bb) - torch.minimum(at, bt)


def _aspect_term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """CIoU's aspect-ratio term ``4/π² (atan(w_gt/h_gt) - atan(w/h))²`` (a = prediction, b = truth)."""
    diff = torch.atan(b[..., 2] / b[..., 3]) - torch.atan(a[..., 2] / a[..., 3])
    return 4 / (math.pi * math.pi) * diff * diff


def box_ious(a: torch.Tensor, b: torch.Tensor) -> Ious:
    """box_iou, box_giou, box_diou and box_ciou of prediction ``a`` against truth ``b``."""
    iou, union = _iou_union(a, b)
    cw, ch = _enclosing(a, b)
    area_c = cw * ch
    giou = torch.where(area_c == 0, iou, iou - (area_c - union) / _nonzero(area_c))
    diag = cw * cw + ch * ch
    dist = (a[..., 0] - b[..., 0]) ** 2 + (a[..., 1] - b[..., 1]) ** 2
    ratio = dist / _nonzero(diag)
    diou = torch.where(diag == 0, iou, iou - ratio.pow(0.6))  # box.c's exponent
    ar = _aspect_term(a, b)
    alpha = ar / (1 - iou + ar + 0.000001)
    ciou = torch.where(diag == 0, iou, iou - (ratio + alpha * ar))
    return Ious(iou, giou, diou, ciou)


def _nonzero(t: torch.Tensor) -> torch.Tensor:
    """``t`` with zeros replaced by 1, for a division whose zero case ``torch.where`` discards."""
    return torch.where(t == 0, torch.ones_like(t), t)


def box_iou_kind(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """box_iou_kind: the overlap named by ``iou_thresh_kind``."""
    return getattr(box_ious(a, b), kind)


def dx_box_iou(pred: torch.Tensor, truth: torch.Tensor, kind: str) -> tuple[torch.Tensor, ...]:
    """dx_box_iou: (dx, dy, dw, dh), the gradient raising the IoU/GIoU/DIoU/CIoU of ``pred`` (box.c).

    dw and dh are w.r.t. the box's width and height (yolo_layer.c multiplies them by exp(t_w)).
    """
    px, py, pw, ph = pred.unbind(-1)
    tx, ty, tw, th = truth.unbind(-1)
    top, bot, left, right = py - ph / 2, py + ph / 2, px - pw / 2, px + pw / 2
    pt, pb = torch.minimum(top, bot), torch.maximum(top, bot)
    pl, pr = torch.minimum(left, right), torch.maximum(left, right)
    gt, gb, gl, gr = ty - th / 2, ty + th / 2, tx - tw / 2, tx + tw / 2
    area_p = (pb - pt) * (pr - pl)
    area_t = (gb - gt) * (gr - gl)
    ih = torch.minimum(pb, gb) - torch.maximum(pt, gt)
    iw = torch.minimum(pr, gr) - torch.maximum(pl, gl)
    inter = iw * ih  # not clamped, as in box.c
    union = area_p + area_t - inter
    dist = (px - tx) ** 2 + (py - ty) ** 2
    cw_g = torch.maximum(pr, gr) - torch.minimum(pl, gl)
    ch_g = torch.maximum(pb, gb) - torch.minimum(pt, gt)
    area_c = cw_g * ch_g
    zero = torch.zeros_like(px)
    # d(area_p), d(intersection), d(union), d(enclosing area) w.r.t. top, bottom, left, right
    dX = (-(pr - pl), pr - pl, -(pb - pt), pb - pt)
    dI = (torch.where(pt > gt, -iw, zero), torch.where(pb < gb, iw, zero),
          torch.where(pl > gl, -ih, zero), torch.where(pr < gr, ih, zero))
    dU = tuple(x - i for x, i in zip(dX, dI))
    dC = (torch.where(pt < gt, -cw_g, zero), torch.where(pb > gb, cw_g, zero),
          torch.where(pl < gl, -ch_g, zero), torch.where(pr > gr, ch_g, zero))
    u_pos = union > 0
    u_safe = torch.where(u_pos, union, torch.ones_like(union))
    p = [torch.where(u_pos, (union * di - inter * du) / (u_safe * u_safe), zero) for di, du in zip(dI, dU)]
    dt, db, dl, dr = p
    dt, db = torch.where(top < bot, dt, db), torch.where(top < bot, db, dt)  # corner selection
    dl, dr = torch.where(left < right, dl, dr), torch.where(left < right, dr, dl)
    apart = (iw <= 0) | (ih <= 0)
    if kind == "giou":
        g = [(area_c * du - union * dc) / (area_c * area_c) for du, dc in zip(dU, dC)]
        gt_d = [torch.where(area_c > 0, v + gv, v) for v, gv in zip((dt, db, dl, dr), g)]
        dt, db, dl, dr = [torch.where(apart, gv, v) for v, gv in zip(gt_d, g)]
    dx, dy, dw, dh = dl + dr, dt + db, dr - dl, db - dt
    if kind in ("diou", "ciou"):
        dx, dy, dw, dh = _distance_grad(pred, truth, (pt, pb, pl, pr), (gt, gb, gl, gr), dist, apart, (dx, dy, dw, dh), kind, inter / union)
    return dx, dy, dw, dh


def _distance_grad(
    pred: torch.Tensor,
    truth: torch.Tensor,
    pe: tuple[torch.Tensor, ...],
    te: tuple[torch.Tensor, ...],
    dist: torch.Tensor,
    apart: torch.Tensor,
    d: tuple[torch.Tensor, ...],
    kind: str,
    iou: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """The DIoU/CIoU part of dx_box_iou: the centre-distance term (and CIoU's aspect term)."""
    px, py, pw, ph = pred.unbind(-1)
    tx, ty, tw, th = truth.unbind(-1)
    pt, pb, pl, pr = pe
    gt, gb, gl, gr = te
    cw = torch.maximum(px + pw / 2, tx + tw / 2) - torch.minimum(px - pw / 2, tx - tw / 2)
    ch = torch.maximum(py + ph / 2, ty + th / 2) - torch.minimum(py - ph / 2, ty - th / 2)
    c = cw * cw + ch * ch
    one, zero = torch.ones_like(px), torch.zeros_like(px)
    dcw_dx = torch.where(pr > gr, one, zero) - torch.where(pl < gl, one, zero)
    dcw_dw = torch.where(pr > gr, 0.5 * one, zero) - torch.where(pl < gl, -0.5 * one, zero)
    dch_dy = torch.where(pb > gb, one, zero) - torch.where(pt < gt, one, zero)
    dch_dh = torch.where(pb > gb, 0.5 * one, zero) - torch.where(pt < gt, -0.5 * one, zero)
    c2 = c * c
    tx_ = (2 * (tx - px) * c - (2 * cw * dcw_dx) * dist) / c2
    ty_ = (2 * (ty - py) * c - (2 * ch * dch_dy) * dist) / c2
    tw_ = (2 * cw * dcw_dw) * dist / c2
    th_ = (2 * ch * dch_dh) * dist / c2
    if kind == "ciou":
        atan_diff = torch.atan(tw / th) - torch.atan(pw / ph)
        ar = 4 / (math.pi * math.pi) * atan_diff * atan_diff
        alpha = ar / (1 - iou + ar + 0.000001)
        tw_ = tw_ + alpha * (8 / (math.pi * math.pi) * atan_diff * ph)
        th_ = th_ + alpha * (-8 / (math.pi * math.pi) * atan_diff * pw)
    dx, dy, dw, dh = d
    pos = c > 0
    out = [torch.where(pos, v + t, v) for v, t in zip((dx, dy, dw, dh), (tx_, ty_, tw_, th_))]
    return tuple(torch.where(apart, t, v) for v, t in zip(out, (tx_, ty_, tw_, th_)))


def best_truths(pred: torch.Tensor, tbox: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best IoU (box_iou) of each prediction with a valid truth of its image, and that truth's index.

    pred (B, P, 4), tbox (B, M, 4), valid (B, M) -> (B, P) each; the first of equal IoUs wins, as
    with darknet's strict ``>``. Clamping each overlap at 0 gives box_intersection's 0 for disjoint
    boxes; an ignored truth gets edges at infinity, so it overlaps nothing.
    """
    b, p, _ = pred.shape
    m = tbox.shape[1]
    best = pred.new_zeros(b, p)
    best_t = torch.zeros(b, p, dtype=torch.long, device=pred.device)
    if m == 0:
        return best, best_t
    pl, pr = pred[..., 0:1] - pred[..., 2:3] / 2, pred[..., 0:1] + pred[..., 2:3] / 2  # (B, P, 1)
    pt, pb = pred[..., 1:2] - pred[..., 3:4] / 2, pred[..., 1:2] + pred[..., 3:4] / 2
    parea = pred[..., 2:3] * pred[..., 3:4]
    far = torch.full_like(tbox[..., 0], math.inf)
    edge = [torch.where(valid, v, far)[:, None, :] for v in (
        tbox[..., 0] - tbox[..., 2] / 2, tbox[..., 0] + tbox[..., 2] / 2,
        tbox[..., 1] - tbox[..., 3] / 2, tbox[..., 1] + tbox[..., 3] / 2)]  # (B, 1, M)
    tarea = torch.where(valid, tbox[..., 2] * tbox[..., 3], torch.zeros_like(far))[:, None, :]
    step = max(1, _CHUNK // max(1, p * m))
    for s in range(0, b, step):
        c = slice(s, s + step)
        ow = torch.minimum(pr[c], edge[1][c]).sub_(torch.maximum(pl[c], edge[0][c])).clamp_(min=0)
        oh = torch.minimum(pb[c], edge[3][c]).sub_(torch.maximum(pt[c], edge[2][c])).clamp_(min=0)
        inter = ow.mul_(oh)
        union = (parea[c] + tarea[c]).sub_(inter)
        iou = inter.div_(union.masked_fill_(union == 0, 1.0))  # union 0 means intersection 0
        best_t[c] = iou.argmax(-1)
        best[c] = iou.gather(-1, best_t[c, :, None])[..., 0]
    return best, best_t
