"""Anchors by k-means over label boxes with the 1 − IoU distance, as AlexeyAB darknet's ``calc_anchors``
(detector.c) and ``do_kmeans`` (matrix.c) compute them — but seeded.

darknet seeds ``rand()`` with the time, so two runs may differ; here the k starting centres are k
distinct boxes drawn by a ``numpy.random.Generator(seed)``. Everything after the draw is darknet's
arithmetic in float32: boxes are (w·width, h·height); a box goes to the first centre at the smallest
``1 − min(w)·min(h) / (w·h + cw·ch − min(w)·min(h))``; a centre becomes the float32 sum of its boxes
(in box order) divided by their count, and keeps its old coordinate where that comes out 0 (an empty
cluster); iterations stop when no box changes centre (at most 1000; k = 1 starts with one update).
The anchors are then sorted by area (a stable sort) and the average IoU is the float32 mean of each
box's IoU with its nearest anchor, ×100.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from cnnlab.errors import CnnlabError

f32 = np.float32


@dataclass
class Anchors:
    anchors: np.ndarray  # (k, 2) float32, w h in pixels of the net input, by increasing area
    iterations: int  # darknet's printed "iterations"
    avg_iou: float  # percent, float32 arithmetic as darknet

    def text(self, width: int) -> str:
        """darknet's anchors line: ``%3.0f,%3.0f`` pairs (``%2.4f`` when width ≤ 32, i.e. grid units)."""
        fmt = "%3.0f,%3.0f" if width > 32 else "%2.4f,%2.4f"
        return ", ".join(fmt % (float(w), float(h)) for w, h in self.anchors)


def shape_iou(boxes: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """IoU of every (box, centre) pair aligned at a corner, float32 as matrix.c ``dist``. (N, k)"""
    bw, bh = boxes[:, 0:1], boxes[:, 1:2]
    cw, ch = centers[None, :, 0], centers[None, :, 1]
    inter = np.minimum(bw, cw) * np.minimum(bh, ch)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inter / ((bw * bh + cw * ch) - inter)).astype(f32)


def iou_distance(boxes: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """matrix.c ``dist``: 1 − shape IoU, float32. (N, k)"""
    return (f32(1) - shape_iou(boxes, centers)).astype(f32)


def _update(boxes: np.ndarray, assign: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """kmeans_maximization: float32 sums in box order, / count; a 0 coordinate keeps the old centre."""
    sums = np.zeros_like(centers)
    np.add.at(sums, assign, boxes)  # unbuffered, in index order: darknet's running float sum
    counts = np.bincount(assign, minlength=len(centers)).astype(f32)[:, None]
    new = np.where(counts > 0, sums / np.maximum(counts, f32(1)), sums).astype(f32)
    return np.where(new == 0, centers, new)


def kmeans_anchors(boxes: np.ndarray, k: int, seed: int = 0, start: np.ndarray | None = None) -> Anchors:
    """``boxes``: (N, 2) float32 box sizes in net pixels (label w·width, h·height). ``start``: the indices
    of the k starting boxes instead of a seeded draw (e.g. the ones a darknet run drew)."""
    boxes = np.asarray(boxes, f32).reshape(-1, 2)
    if k < 1:
        raise CnnlabError(f"-num_of_clusters must be at least 1, got {k}")
    if len(boxes) < k:
        raise CnnlabError(f"only {len(boxes)} label boxes for {k} clusters; use fewer clusters or more labelled images")
    if start is None:
        start = np.random.default_rng(seed).choice(len(boxes), k, replace=False)
    centers = boxes[np.asarray(start, np.int64)].copy()
    assign = np.zeros(len(boxes), np.int64)
    if k == 1:
        centers = _update(boxes, assign, centers)
    i = 0
    while i < 1000:
        closest = iou_distance(boxes, centers).argmin(1)  # the first of equal distances
        converged = bool((closest == assign).all())
        assign = closest
        if converged:
            break
        centers = _update(boxes, assign, centers)
        i += 1
    centers = centers[np.argsort(centers[:, 0] * centers[:, 1], kind="stable")]
    return Anchors(centers, i, _avg_iou(boxes, centers))


def _avg_iou(boxes: np.ndarray, anchors: np.ndarray) -> float:
    """calc_anchors' figure: float32 sum of each box's best IoU (boxes whose IoU is outside 0..1 are
    skipped, as darknet does), then 100·sum / N."""
    iou = shape_iou(boxes, anchors)
    best = iou[np.arange(len(boxes)), (f32(1) - iou).argmin(1)]
    total = f32(0)
    for v in best[(best <= 1) & (best >= 0)]:
        total = f32(total + v)
    return float(f32(f32(100) * total) / f32(len(boxes)))


_SECTION = re.compile(r"^\s*\[([^\]]*)\]")


def cfg_with_anchors(cfg_text: str, anchors: str, k: int, cfg_name: str) -> str:
    """The cfg text with ``anchors=`` of every [yolo]/[region] replaced (the first one of a section: darknet
    reads the first). Each of them must have num = k; other lines are kept as they are."""
    lines = cfg_text.split("\n")
    out: list[str] = []
    section, start, done, found = "", 0, True, 0

    def close() -> None:
        if not done:  # the section had no anchors= line: add one after its header
            out.insert(start + 1, f"anchors = {anchors}")

    for n, line in enumerate(lines, start=1):
        m = _SECTION.match(line)
        if m:
            close()
            section, start = m.group(1).strip().lower(), len(out)
            done = section not in ("yolo", "region")
            found += not done
        key = line.split("=", 1)[0].replace(" ", "").replace("\t", "").lower() if "=" in line else ""
        if not done and key == "anchors":
            out.append(f"anchors = {anchors}")
            done = True
            continue
        if section in ("yolo", "region") and key == "num":
            num = line.split("=", 1)[1].strip()
            if num != str(k):
                raise CnnlabError(f"{cfg_name}:{n}: [{section}] has num={num} but {k} anchors were computed; "
                                  f"run with -num_of_clusters {num} or change num= (and mask=) in the cfg")  # fmt: skip
        out.append(line)
    close()
    if not found:
        raise CnnlabError(f"{cfg_name} has no [yolo] or [region] section to write anchors into")
    return "\n".join(out)
