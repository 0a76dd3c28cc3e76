"""YOLO label files as AlexeyAB darknet finds and reads them (utils.c replace_image_to_label, data.c
read_boxes), for ``detector map`` / ``calc_anchors``.

The label of an image: ``/JPEGImages/`` → ``/labels/`` and the COCO ``/images/{train,val}{2014,2017}/``
folders → ``/labels/…`` (first occurrence of each), then a known image extension → ``.txt``; any other
path keeps its folder, so the label sits beside the image. A file holds ``id x y w h`` records, read
until the first one that does not parse (darknet's fscanf loop). A private reader until
``cnnlab.data.sources.detection`` (the YOLO label source) is there to share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

f32 = np.float32

# utils.c replace_image_to_label, in its order (first occurrence of each)
_FOLDERS = [
    ("/images/train2017/", "/labels/train2017/"), ("/images/val2017/", "/labels/val2017/"), ("/JPEGImages/", "/labels/"),
    ("\\images\\train2017\\", "\\labels\\train2017\\"), ("\\images\\val2017\\", "\\labels\\val2017\\"),
    ("\\images\\train2014\\", "\\labels\\train2014\\"), ("\\images\\val2014\\", "\\labels\\val2014\\"),
    ("/images/train2014/", "/labels/train2014/"), ("/images/val2014/", "/labels/val2014/"), ("\\JPEGImages\\", "\\labels\\"),
]  # fmt: skip
_EXTENSIONS = [".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm", ".PPM", ".tiff", ".TIFF"]


def alexeyab_label_path(image_path: str) -> str:
    """AlexeyAB's label file for an image path (utils.c replace_image_to_label)."""
    p = image_path
    for old, new in _FOLDERS:
        p = p.replace(old, new, 1)
    p = p.strip(" \t")
    for ext in _EXTENSIONS:
        if p.endswith(ext):
            p = p[: -len(ext)] + ".txt"
    return p


def read_yolo_boxes(label_path: Path) -> tuple[np.ndarray, bool]:
    """``read_boxes``: (N, 5) float32 [cls, x, y, w, h] and whether the whole file parsed. Reading stops
    at the first record that is not ``int float float float float``, as darknet's fscanf loop does.
    Raises ``OSError`` when the file cannot be opened."""
    tokens = Path(label_path).read_bytes().decode("utf-8", "replace").split()
    rows: list[list[float]] = []
    for k in range(0, len(tokens) - len(tokens) % 5, 5):
        try:
            rows.append([float(int(tokens[k]))] + [float(t) for t in tokens[k + 1 : k + 5]])
        except ValueError:
            return np.array(rows, f32).reshape(-1, 5), False
    return np.array(rows, f32).reshape(-1, 5), len(tokens) % 5 == 0


@dataclass
class LabelReport:
    """Label files that were missing, unparsable, or held a class outside the network's classes."""

    missing: list[str] = field(default_factory=list)
    garbled: list[str] = field(default_factory=list)
    bad_class: list[str] = field(default_factory=list)
    bad_images: list[str] = field(default_factory=list)

    def print(self, err: TextIO, classes: int) -> None:
        def first(xs: list[str]) -> str:
            return ", ".join(xs[:3]) + (", ..." if len(xs) > 3 else "")

        if self.missing:
            print(f"warning: {len(self.missing)} images have no label file (AlexeyAB's rule: NAME.txt beside the image, "
                  f"or in labels/ for a JPEGImages/ or COCO images/ path); counted as images without objects: {first(self.missing)}", file=err)  # fmt: skip
        if self.garbled:
            print(f"warning: {len(self.garbled)} label files stop parsing before their end (lines must be 'class x y w h'); "
                  f"the boxes before that point were used, as darknet does: {first(self.garbled)}", file=err)  # fmt: skip
        if self.bad_class:
            print(f"warning: {len(self.bad_class)} label files have class ids outside 0..{classes - 1}; those boxes were skipped: "
                  f"{first(self.bad_class)}", file=err)  # fmt: skip
        if self.bad_images:
            print(f"warning: {len(self.bad_images)} images could not be read and were skipped: {first(self.bad_images)}", file=err)


def truths(label: str, classes: int | None, report: LabelReport, out: TextIO) -> np.ndarray:
    """The (N, 5) boxes of a label file; darknet's "Can't open label file" line when there is none (no
    boxes then). With ``classes``, boxes whose id is outside 0..classes-1 are dropped and reported."""
    try:
        boxes, whole = read_yolo_boxes(Path(label))
    except OSError:
        print(f"Can't open label file. (This can be normal only if you use MSCOCO): {label} ", file=out)
        report.missing.append(label)
        return np.zeros((0, 5), f32)
    if not whole:
        report.garbled.append(label)
    if classes is not None:
        ok = (boxes[:, 0] >= 0) & (boxes[:, 0] < classes)
        if not ok.all():
            report.bad_class.append(label)
            boxes = boxes[ok]
    return boxes
