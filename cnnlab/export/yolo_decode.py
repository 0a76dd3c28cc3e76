"""Boxes from an exported detector's raw head outputs: decode, letterbox correction, NMS (numpy only).

An exported darknet detector outputs, per [yolo]/[region] layer, what that layer outputs in darknet:
``(N, anchors·(5+classes), H, W)`` in darknet's ``[anchor][entry][H][W]`` channel order, with the
layer's activations applied (logistic x, y, objectness, classes; w, h raw; ``scale_x_y`` applied).
The file's metadata ``heads`` (JSON) lists, per output, everything decoding needs. This module is
plain numpy so it can be copied next to an onnxruntime/OpenVINO program::

    heads = json.loads(metadata["heads"])
    outs = session.run(None, {"images": batch})          # one array per head
    boxes, obj, probs = decode([o[0] for o in outs], heads, thresh=0.25)   # image 0
    correct_letterbox(boxes, im_w, im_h, heads[0]["net_w"], heads[0]["net_h"])  # if letterboxed
    dets = nms(boxes, probs, iou_thresh=0.45)             # [(class, prob, (x, y, w, h)), …]

Boxes are (x, y, w, h): centre and size relative to the network input (after ``correct_letterbox``
relative to the original image). Order and arithmetic follow :mod:`cnnlab.darknet.detect` (cnnlab's
darknet-exact decode, which it is tested against); NMS is the plain greedy per-class suppression
darknet's ``do_nms_sort`` performs, without its float/double bookkeeping.
"""

from __future__ import annotations

import numpy as np

f32 = np.float32


def head_specs(net) -> list[dict]:  # net: cnnlab.darknet.model.DarknetNet
    """The metadata entry of each detection layer of ``net``, in output order."""
    from cnnlab.darknet.layers import Yolo

    specs = []
    for i in net.detection_layers:
        layer = net.layers[i]
        spec = {"layer": i, "classes": layer.classes, "net_w": net.width, "net_h": net.height}
        if isinstance(layer, Yolo):
            anchors = [[layer.anchors[2 * m], layer.anchors[2 * m + 1]] for m in layer.mask]
            spec |= {"kind": "yolo", "anchors": anchors, "new_coords": layer.new_coords, "units": "pixels", "nms_kind": layer.nms_kind}
        else:
            anchors = [[layer.anchors[2 * a], layer.anchors[2 * a + 1]] for a in range(layer.n)]
            spec |= {"kind": "region", "anchors": anchors, "coords": layer.coords, "background": layer.background, "units": "cells"}
        specs.append(spec)
    return specs


def _yolo(out: np.ndarray, h: dict, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    anchors = np.asarray(h["anchors"], np.float64)  # (A, 2) pixels
    a, per = len(anchors), 5 + h["classes"]
    _, gh, gw = out.shape
    v = out.reshape(a, per, gh, gw).transpose(2, 3, 0, 1).reshape(gh * gw * a, per)  # cell-major, then anchor
    cell, anchor = np.repeat(np.arange(gh * gw), a), np.tile(np.arange(a), gh * gw)
    keep = v[:, 4] > f32(thresh)
    v, cell, anchor = v[keep], cell[keep], anchor[keep]
    row, col = (cell // gw).astype(f32), (cell % gw).astype(f32)
    if h["new_coords"]:
        x, y = (col + v[:, 0] * 2 - f32(0.5)) / gw, (row + v[:, 1] * 2 - f32(0.5)) / gh
        bw, bh = v[:, 2].astype(np.float64) ** 2 * 4, v[:, 3].astype(np.float64) ** 2 * 4
    else:
        x, y = (col + v[:, 0]) / gw, (row + v[:, 1]) / gh
        bw, bh = np.exp(v[:, 2].astype(np.float64)), np.exp(v[:, 3].astype(np.float64))
    bw, bh = bw * anchors[anchor, 0] / h["net_w"], bh * anchors[anchor, 1] / h["net_h"]
    probs = v[:, 4:5] * v[:, 5:]
    return np.stack([x, y, bw, bh], 1).astype(f32), v[:, 4].astype(f32), np.where(probs > f32(thresh), probs, 0).astype(f32)


def _region(out: np.ndarray, h: dict, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    anchors = np.asarray(h["anchors"], np.float64)  # (A, 2) grid cells
    a, k = len(anchors), h["coords"]
    _, gh, gw = out.shape
    v = out.reshape(a, k + 1 + h["classes"], gh * gw).transpose(0, 2, 1).reshape(a * gh * gw, -1)  # anchor-major
    cell, anchor = np.tile(np.arange(gh * gw), a), np.repeat(np.arange(a), gh * gw)
    row, col = (cell // gw).astype(f32), (cell % gw).astype(f32)
    x, y = (col + v[:, 0]) / gw, (row + v[:, 1]) / gh
    bw = np.exp(v[:, 2].astype(np.float64)) * anchors[anchor, 0] / gw
    bh = np.exp(v[:, 3].astype(np.float64)) * anchors[anchor, 1] / gh
    scale = np.ones(len(v), f32) if h["background"] else v[:, k]
    obj = np.where(scale > f32(thresh), scale, 0).astype(f32)
    probs = scale[:, None] * v[:, k + 1 :]
    probs = np.where((probs > f32(thresh)) & (obj[:, None] != 0), probs, 0).astype(f32)
    return np.stack([x, y, bw, bh], 1).astype(f32), obj, probs


def decode(outputs: list[np.ndarray], heads: list[dict], thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's head outputs (each (C, H, W)) → boxes (K, 4), objectness (K,), class probs (K, classes)."""
    parts = [(_yolo if h["kind"] == "yolo" else _region)(np.asarray(o, f32), h, thresh) for o, h in zip(outputs, heads)]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def correct_letterbox(boxes: np.ndarray, im_w: int, im_h: int, net_w: int, net_h: int) -> None:
    """In place: boxes relative to a letterboxed network input → relative to the original image."""
    if net_w / im_w < net_h / im_h:
        new_w, new_h = net_w, im_h * net_w // im_w
    else:
        new_w, new_h = im_w * net_h // im_h, net_h
    boxes[:, 0] = (boxes[:, 0] - (net_w - new_w) / 2 / net_w) / (new_w / net_w)
    boxes[:, 1] = (boxes[:, 1] - (net_h - new_h) / 2 / net_h) / (new_h / net_h)
    boxes[:, 2] *= net_w / new_w
    boxes[:, 3] *= net_h / new_h


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2] - box[2:] / 2, others[:, :2] - others[:, 2:] / 2)
    hi = np.minimum(box[:2] + box[2:] / 2, others[:, :2] + others[:, 2:] / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    return inter / (box[2] * box[3] + others[:, 2] * others[:, 3] - inter)


def nms(boxes: np.ndarray, probs: np.ndarray, iou_thresh: float) -> list[tuple[int, float, tuple[float, ...]]]:
    """Greedy per-class NMS: for each class, boxes by falling probability; a box is dropped when it
    overlaps a kept one by more than ``iou_thresh``. Returns (class, prob, (x, y, w, h)) per detection."""
    dets = []
    for c in range(probs.shape[1]):
        order = [i for i in np.argsort(-probs[:, c], kind="stable") if probs[i, c] > 0]
        while order:
            best, order = order[0], order[1:]
            dets.append((c, float(probs[best, c]), tuple(float(v) for v in boxes[best])))
            if order:
                order = [i for i, o in zip(order, _iou(boxes[best], boxes[order])) if not o > iou_thresh]
    return dets
