"""The boxes of one image: validated into cnnlab's convention, with every fix counted.

Convention (``/work/notes/detect-interfaces.md``): a float32 array ``(N, 5)`` of rows
``[cls, xc, yc, w, h]``, the order of a YOLO label line; the centre and size are fractions of the
image's width and height (0..1) and ``cls`` is a float holding the class index.

Cleaning one image's boxes, in this order (each dropped box is counted under its first reason):

1. a class that is not a whole number in ``0 .. classes - 1`` → dropped (``bad_class``);
2. a NaN or infinite coordinate → dropped (``non_finite``);
3. reversed corners (min > max, or a negative YOLO width/height) → put in order (``swapped``);
4. a corner outside the image → moved onto its edge (``clamped``);
5. nothing left (width or height ≤ ``min_size`` after 3 and 4) → dropped (``empty``).

``swapped`` and ``clamped`` count kept boxes only. A box that needs no fix keeps its input values
bit for bit (cast to float32), so clean YOLO labels round-trip exactly. This module imports no
other part of cnnlab.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from torchvision.ops import box_convert

EMPTY = np.zeros((0, 5), dtype=np.float32)


@dataclass
class BoxFixes:
    """What cleaning did to the boxes of one or more images."""

    kept: int = 0
    clamped: int = 0  # kept, after moving a corner that lay outside the image onto its edge
    swapped: int = 0  # kept, after putting reversed corners in order
    empty: int = 0  # dropped: no width or no height (after swapping and clamping)
    bad_class: int = 0  # dropped: class not a whole number in 0 .. classes - 1
    non_finite: int = 0  # dropped: a NaN or infinite number

    @property
    def dropped(self) -> int:
        return self.empty + self.bad_class + self.non_finite

    def __iadd__(self, other: BoxFixes) -> BoxFixes:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def summary(self) -> str:
        """``kept 9 (2 clamped, 1 swapped), dropped 3 (1 empty, 2 with a class outside the names)``."""
        fixed = [f"{n} {what}" for n, what in ((self.clamped, "clamped"), (self.swapped, "swapped")) if n]
        why = [f"{n} {what}" for n, what in ((self.empty, "empty"), (self.bad_class, "with a class outside the names"),
                                             (self.non_finite, "with a NaN or infinite number")) if n]  # fmt: skip
        text = f"kept {self.kept}" + (f" ({', '.join(fixed)})" if fixed else "")
        return text + (f", dropped {self.dropped} ({', '.join(why)})" if why else "")


class Cleaned(NamedTuple):
    boxes: np.ndarray  # (K, 5) float32 [cls, xc, yc, w, h], K ≤ N
    keep: np.ndarray  # (N,) bool: which input rows survived (to filter parallel arrays, e.g. VOC difficult)
    fixes: BoxFixes


def _cxcywh(xyxy: np.ndarray) -> np.ndarray:
    return box_convert(torch.from_numpy(xyxy), "xyxy", "cxcywh").numpy()


def _xyxy(cxcywh: np.ndarray) -> np.ndarray:
    return box_convert(torch.from_numpy(cxcywh), "cxcywh", "xyxy").numpy()


def _clean(cls: np.ndarray, xyxy: np.ndarray, classes: int, min_size: float, rows: np.ndarray | None) -> Cleaned:
    """``cls`` (N,), ``xyxy`` (N, 4) float64 in image fractions; ``rows`` the YOLO input to keep when unchanged."""
    n = len(cls)
    bad_class = ~(np.isfinite(cls) & (cls == np.round(cls)) & (cls >= 0) & (cls < classes))
    non_finite = ~bad_class & ~np.isfinite(xyxy).all(axis=1)
    ordered = np.stack([np.minimum(xyxy[:, 0], xyxy[:, 2]), np.minimum(xyxy[:, 1], xyxy[:, 3]),
                        np.maximum(xyxy[:, 0], xyxy[:, 2]), np.maximum(xyxy[:, 1], xyxy[:, 3])], axis=1)  # fmt: skip
    with np.errstate(invalid="ignore"):  # NaN rows are dropped above
        swapped = (ordered != xyxy).any(axis=1)
        inside = np.clip(ordered, 0.0, 1.0)
        clamped = (inside != ordered).any(axis=1)
        empty = ~bad_class & ~non_finite & ~((inside[:, 2] - inside[:, 0] > min_size) & (inside[:, 3] - inside[:, 1] > min_size))
    keep = ~(bad_class | non_finite | empty)
    changed = keep & (swapped | clamped)
    out = np.empty((n, 5), dtype=np.float64)
    out[:, 0] = cls
    out[:, 1:] = _cxcywh(inside) if n else inside
    if rows is not None:  # unchanged boxes keep their input values exactly
        out[~changed] = rows[~changed]
    fixes = BoxFixes(kept=int(keep.sum()), clamped=int((keep & clamped).sum()), swapped=int((keep & swapped).sum()),
                     empty=int(empty.sum()), bad_class=int(bad_class.sum()), non_finite=int(non_finite.sum()))  # fmt: skip
    return Cleaned(out[keep].astype(np.float32).reshape(-1, 5), keep, fixes)


def clean_corners(cls: npt.ArrayLike, corners: npt.ArrayLike, classes: int, width: float = 1.0, height: float = 1.0,
                  min_size: float = 0.0) -> Cleaned:  # fmt: skip
    """Boxes given as corners ``(N, 4)`` ``[x0, y0, x1, y1]`` in pixels of a ``width`` × ``height`` image
    (or as image fractions, with the default 1 × 1) and their classes ``(N,)`` → the convention."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width} x {height} is not positive")
    cls = np.asarray(cls, dtype=np.float64).reshape(-1)
    xyxy = np.asarray(corners, dtype=np.float64).reshape(-1, 4) / np.array([width, height, width, height])
    if len(cls) != len(xyxy):
        raise ValueError(f"{len(cls)} classes for {len(xyxy)} boxes")
    return _clean(cls, xyxy, classes, min_size, None)


def clean_yolo(rows: npt.ArrayLike, classes: int, min_size: float = 0.0) -> Cleaned:
    """YOLO rows ``(N, 5)`` ``[cls, xc, yc, w, h]`` (image fractions) → the convention, cleaned."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    return _clean(rows[:, 0], _xyxy(rows[:, 1:]), classes, min_size, rows)


def to_corners(boxes: npt.ArrayLike, width: float = 1.0, height: float = 1.0) -> np.ndarray:
    """Convention rows ``(N, 5)`` → float32 corners ``(N, 4)`` ``[x0, y0, x1, y1]`` (pixels of a
    ``width`` × ``height`` image; image fractions with the default 1 × 1). The class is not kept."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    return (_xyxy(b[:, 1:]) * np.array([width, height, width, height])).astype(np.float32)


def from_corners(cls: npt.ArrayLike, corners: npt.ArrayLike, width: float = 1.0, height: float = 1.0) -> np.ndarray:
    """Corners ``(N, 4)`` (pixels of a ``width`` × ``height`` image) and classes ``(N,)`` → convention
    rows, as they are (no cleaning: use :func:`clean_corners` for data from outside)."""
    cls = np.asarray(cls, dtype=np.float64).reshape(-1, 1)
    xyxy = np.asarray(corners, dtype=np.float64).reshape(-1, 4) / np.array([width, height, width, height])
    return np.concatenate([cls, _cxcywh(xyxy)], axis=1).astype(np.float32)
