"""The boxes CSV of ``cnnlab data bbox`` (``filename,wnid,xmin,ymin,xmax,ymax``) joined with images.

* **Join**: a CSV row belongs to the image whose file stem is the row's ``filename`` stem
  (``n01440764_10026.JPEG`` ↔ ``train/n01440764/n01440764_10026.JPEG``); an image without a row
  has no boxes (counted as a missing label, as most ImageNet training images have none).
* **Classes**: the image source's (for ImageNet, the wnids of the class folders); a box whose
  ``wnid`` is not one of them is dropped and counted.
* **Units**: the CSV holds pixels, or fractions of the image size when written with
  ``--relative``. Which one is read from the file: fractions when every coordinate lies in 0..1 (a
  pixel box that small would be empty anyway). Pixel boxes are scaled by the image's size from its
  header (no decoding), then :func:`cnnlab.data.boxes.clean_corners`.

:func:`read_bbox_csv` is also what the shard writer stores (``cnnlab data shards --boxes``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np
import torch

from cnnlab.data.boxes import clean_corners
from cnnlab.data.datasets import open_split
from cnnlab.data.images import image_size_and_format
from cnnlab.data.sources.base import BadImage, ImageSource
from cnnlab.data.sources.detection import DetectionSource, ImageBoxes, no_boxes
from cnnlab.errors import CnnlabError

COLUMNS = ("filename", "wnid", "xmin", "ymin", "xmax", "ymax")


@dataclass
class BboxCsv:
    path: str
    relative: bool  # coordinates are fractions of the image size (``cnnlab data bbox --relative``)
    rows: dict[str, list[tuple[str, list[float]]]] = field(default_factory=dict)  # stem → [(wnid, [x0, y0, x1, y1])]

    def corners(self, stem: str, cls: str, classes: list[str]) -> list[list[float]]:
        """The boxes of the image ``stem`` of class ``cls``: rows whose ``wnid`` is that class, or names
        no class of ``classes`` (a CSV keyed otherwise; the stem alone joins). Class folders may share
        file names (``cat/img_1.jpg``, ``dog/img_1.jpg``): a row of another class is not this image's."""
        return [c for wnid, c in self.rows.get(stem, []) if wnid == cls or wnid not in classes]


def read_bbox_csv(path: str | Path) -> BboxCsv:
    """Read the CSV; a missing column or number is one :class:`CnnlabError` naming the file."""
    rows: dict[str, list[tuple[str, list[float]]]] = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                corners = [float(row[k]) for k in COLUMNS[2:]]
                rows.setdefault(PurePath(row["filename"]).stem, []).append((row["wnid"], corners))
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise CnnlabError(f"cannot read boxes from {path} ({e}): give a CSV written by `cnnlab data bbox`") from None
    values = [v for boxes in rows.values() for _, c in boxes for v in c]
    relative = bool(values) and all(0.0 <= v <= 1.0 for v in values)
    return BboxCsv(str(path), relative, rows)


class CsvBoxSource(DetectionSource):
    """The images of ``base`` (any source whose ``describe(i)`` is the image's file) with the CSV's boxes."""

    rule = "the bbox CSV has no row for the image's file name"

    def __init__(self, base: ImageSource, table: BboxCsv) -> None:
        self.base, self.table = base, table
        self.classes = list(base.classes)
        self._index = {name: i for i, name in enumerate(self.classes)}
        super().__init__()

    def __len__(self) -> int:
        return len(self.base)

    def load(self, index: int) -> torch.Tensor:
        return self.base.load(index)

    def describe(self, index: int) -> str:
        return self.base.describe(index)

    def _size(self, index: int) -> tuple[int, int]:
        path = self.describe(index)
        if os.path.isfile(path):
            try:
                w, h, _ = image_size_and_format(path)  # the header only
            except BadImage as e:
                raise BadImage(f"{path}: {e}") from None
            return w, h
        img = self.base.load(index)  # a source without files: decode
        return int(img.shape[2]), int(img.shape[1])

    def read_boxes(self, index: int) -> ImageBoxes:
        stem = PurePath(self.describe(index)).stem
        rows = self.table.rows.get(stem)
        if not rows:
            return no_boxes(f"{self.describe(index)}: no row for {stem} in {self.table.path}")
        width, height = (1, 1) if self.table.relative else self._size(index)
        cls = [self._index.get(wnid, -1) for wnid, _ in rows]
        cleaned = clean_corners(cls, [c for _, c in rows], len(self.classes), width=width, height=height)
        return ImageBoxes(cleaned.boxes, np.zeros(len(cleaned.boxes), dtype=bool), cleaned.fixes)


def open_bbox_csv(csv_path: str | Path, images: str, split: str, seed: int = 0) -> CsvBoxSource:
    """``images`` is any dataset ``cnnlab.data.datasets.open_split`` opens (e.g. an ImageNet folder)."""
    base = open_split(images, split, seed)
    return CsvBoxSource(base, read_bbox_csv(csv_path))
