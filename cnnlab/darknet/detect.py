"""Darknet's box decoding ([yolo], [region]), letterbox correction and NMS, in darknet's order.

Hand-written in numpy float32 rather than torchvision.ops.nms because darknet's results depend on
its exact order of operations: boxes enumerated cell-major ([yolo]) or anchor-major ([region]),
boxes with zero objectness swapped to the end, a stable sort per class, and IoU computed in float32.
Matching darknet's printed detections needs all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cnnlab.darknet.layers import Region, Yolo

f32 = np.float32


@dataclass
class Detections:
    """K boxes in darknet's array order: centre/size relative to the original image."""

    boxes: np.ndarray  # (K, 4) float32: x, y, w, h
    objectness: np.ndarray  # (K,) float32
    probs: np.ndarray  # (K, classes) float32, zero where ≤ thresh or suppressed

    def __len__(self) -> int:
        return len(self.boxes)

    def take(self, order: np.ndarray) -> "Detections":
        return Detections(self.boxes[order], self.objectness[order], self.probs[order])


def _yolo_boxes(layer: Yolo, out: np.ndarray, thresh: float) -> Detections:
    n, per = layer.n, 5 + layer.classes
    _, h, w = out.shape
    v = out.reshape(n, per, h, w).transpose(2, 3, 0, 1).reshape(h * w * n, per)  # cell-major, then anchor
    cell = np.repeat(np.arange(h * w), n)
    anchor = np.tile(np.arange(n), h * w)
    keep = v[:, 4] > f32(thresh)
    v, cell, anchor = v[keep], cell[keep], anchor[keep]
    row, col = cell // w, cell % w
    aw = np.array([layer.anchors[2 * layer.mask[a]] for a in anchor], np.float64)
    ah = np.array([layer.anchors[2 * layer.mask[a] + 1] for a in anchor], np.float64)
    if layer.new_coords:  # AlexeyAB scaled-yolo boxes
        x = (col.astype(f32) + v[:, 0] * f32(2) - f32(0.5)) / f32(w)
        y = (row.astype(f32) + v[:, 1] * f32(2) - f32(0.5)) / f32(h)
        bw = (v[:, 2].astype(np.float64) ** 2 * 4 * aw / layer.net_w).astype(f32)
        bh = (v[:, 3].astype(np.float64) ** 2 * 4 * ah / layer.net_h).astype(f32)
    else:
        x = (col.astype(f32) + v[:, 0]) / f32(w)  # float arithmetic, as in get_yolo_box
        y = (row.astype(f32) + v[:, 1]) / f32(h)
        bw = (np.exp(v[:, 2].astype(np.float64)) * aw / layer.net_w).astype(f32)  # exp() is double in C
        bh = (np.exp(v[:, 3].astype(np.float64)) * ah / layer.net_h).astype(f32)
    obj = v[:, 4]
    probs = obj[:, None] * v[:, 5:]
    probs = np.where(probs > f32(thresh), probs, f32(0)).astype(f32)
    return Detections(np.stack([x, y, bw, bh], 1).astype(f32), obj.astype(f32), probs)


def _region_boxes(layer: Region, out: np.ndarray, thresh: float) -> Detections:
    n, k = layer.n, layer.coords
    per = k + 1 + layer.classes
    _, h, w = out.shape
    v = out.reshape(n, per, h * w).transpose(0, 2, 1).reshape(n * h * w, per)  # anchor-major
    cell = np.tile(np.arange(h * w), n)
    anchor = np.repeat(np.arange(n), h * w)
    row, col = cell // w, cell % w
    aw = np.array(layer.anchors[0::2], np.float64)[anchor]
    ah = np.array(layer.anchors[1::2], np.float64)[anchor]
    x = (col.astype(f32) + v[:, 0]) / f32(w)
    y = (row.astype(f32) + v[:, 1]) / f32(h)
    bw = (np.exp(v[:, 2].astype(np.float64)) * aw / w).astype(f32)  # anchors are in grid units
    bh = (np.exp(v[:, 3].astype(np.float64)) * ah / h).astype(f32)
    scale = np.ones(len(v), f32) if layer.background else v[:, k]
    obj = np.where(scale > f32(thresh), scale, f32(0)).astype(f32)
    probs = scale[:, None] * v[:, k + 1 :]
    probs = np.where((probs > f32(thresh)) & (obj[:, None] != 0), probs, f32(0)).astype(f32)
    return Detections(np.stack([x, y, bw, bh], 1).astype(f32), obj, probs)


def correct_boxes(d: Detections, im_w: int, im_h: int, net_w: int, net_h: int, letter: bool) -> None:
    """Undo the letterbox (correct_yolo_boxes / correct_region_boxes), in darknet's float/double mix."""
    if not letter:
        return  # AlexeyAB stretch: relative coordinates are already relative to the image
    if f32(net_w) / f32(im_w) < f32(net_h) / f32(im_h):
        new_w, new_h = net_w, (im_h * net_w) // im_w
    else:
        new_h, new_w = net_h, (im_w * net_h) // im_h
    b = d.boxes
    rx = np.float64(f32(new_w) / f32(net_w))
    ry = np.float64(f32(new_h) / f32(net_h))
    b[:, 0] = ((b[:, 0].astype(np.float64) - (net_w - new_w) / 2.0 / net_w) / rx).astype(f32)
    b[:, 1] = ((b[:, 1].astype(np.float64) - (net_h - new_h) / 2.0 / net_h) / ry).astype(f32)
    b[:, 2] = b[:, 2] * (f32(net_w) / f32(new_w))
    b[:, 3] = b[:, 3] * (f32(net_h) / f32(new_h))


def network_boxes(
    model: torch.nn.Module, outputs: list[torch.Tensor], im_w: int, im_h: int, thresh: float, letter: bool
) -> Detections:
    """``get_network_boxes`` for one image: ``outputs`` are the forward's per-head (1, C, H, W) tensors."""
    parts: list[Detections] = []
    heads = [model.layers[i] for i in model.detection_layers]
    for layer, out in zip(heads, outputs):
        arr = out[0].detach().to("cpu", torch.float32).numpy()
        if isinstance(layer, Yolo):
            parts.append(_yolo_boxes(layer, arr, thresh))
        else:
            parts.append(_region_boxes(layer, arr, thresh))
    d = Detections(
        np.concatenate([p.boxes for p in parts]),
        np.concatenate([p.objectness for p in parts]),
        np.concatenate([p.probs for p in parts]),
    )
    correct_boxes(d, im_w, im_h, model.width, model.height, letter)
    return d


def _iou_matrix(b: np.ndarray) -> np.ndarray:
    """box_iou for all pairs, in float32 like box.c."""
    x, y, w, h = (b[:, i][:, None] for i in range(4))
    xt, yt, wt, ht = (b[:, i][None, :] for i in range(4))
    two = f32(2)
    ow = np.minimum(x + w / two, xt + wt / two) - np.maximum(x - w / two, xt - wt / two)
    oh = np.minimum(y + h / two, yt + ht / two) - np.maximum(y - h / two, yt - ht / two)
    inter = np.where((ow < 0) | (oh < 0), f32(0), ow * oh)
    union = w * h + wt * ht - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inter / union).astype(f32)


def _diou_matrix(b: np.ndarray) -> np.ndarray:
    """AlexeyAB box_diou: IoU minus (centre distance² / enclosing diagonal²)^0.6."""
    iou = _iou_matrix(b)
    x, y, w, h = (b[:, i][:, None] for i in range(4))
    xt, yt, wt, ht = (b[:, i][None, :] for i in range(4))
    two = f32(2)
    cw = np.maximum(x + w / two, xt + wt / two) - np.minimum(x - w / two, xt - wt / two)
    ch = np.maximum(y + h / two, yt + ht / two) - np.minimum(y - h / two, yt - ht / two)
    c = cw * cw + ch * ch
    d = (x - xt) * (x - xt) + (y - yt) * (y - yt)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.power((d / c).astype(np.float64), 0.6).astype(f32)
    return np.where(c == 0, iou, iou - u).astype(f32)


def nms_sort(d: Detections, thresh: float, kind: str = "default") -> Detections:
    """darknet ``do_nms_sort`` (or AlexeyAB ``diounms_sort`` for ``greedynms``); returns the final array order."""
    order = list(range(len(d)))
    k = len(order) - 1
    i = 0
    while i <= k:  # zero-objectness boxes are swapped to the end (not a stable partition)
        if d.objectness[order[i]] == 0:
            order[i], order[k] = order[k], order[i]
            k -= 1
        else:
            i += 1
    total = k + 1
    d = d.take(np.array(order, dtype=np.int64))
    if total == 0:
        return d
    probs = d.probs.copy()
    overlap = (_diou_matrix if kind == "greedynms" else _iou_matrix)(d.boxes[:total])
    # a mutable permutation of the first `total` boxes, re-sorted (stably, like glibc's merge sort) per class
    perm = np.arange(total)
    for cls in range(probs.shape[1]):
        col = probs[perm, cls]
        perm = perm[np.argsort(-col, kind="stable")]
        nz = perm[probs[perm, cls] > 0]
        for a_pos, a in enumerate(nz):
            if probs[a, cls] == 0:
                continue
            later = nz[a_pos + 1 :]
            hit = later[overlap[a, later] > f32(thresh)]
            probs[hit, cls] = 0
    final = np.concatenate([perm, np.arange(total, len(d))])
    return Detections(d.boxes[final], d.objectness[final], probs[final])
