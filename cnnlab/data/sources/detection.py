"""Sources whose targets are boxes: the interface, and the tally of what their labels needed.

A :class:`DetectionSource` is an :class:`ImageSource` whose samples also have boxes, in the
convention of :mod:`cnnlab.data.boxes` (float32 ``(N, 5)`` rows ``[cls, xc, yc, w, h]``, image
fractions). Each image's boxes are read once per process and kept (a few floats per box), so the
tally counts each image once however many epochs read it:

* boxes fixed or dropped by :func:`cnnlab.data.boxes.clean_yolo` / ``clean_corners``;
* images whose label file is missing (they have no boxes, as in darknet), with the rule used and
  the path looked for;
* label files that cannot be read or parsed: ``boxes(i)`` raises :class:`BadImage` naming the file,
  so the sample is skipped and reported like an unreadable image.

A command reports ``source.tally.lines()``; :meth:`DetectionSource.scan` reads every label first
(e.g. before training, where DataLoader workers keep their own tallies).

The formats: :mod:`.yolo_labels` (darknet list or folder + ``.txt`` labels), :mod:`.voc` (PASCAL
VOC XML), :mod:`.bbox_csv` (the CSV of ``cnnlab data bbox`` + an image folder) and
:class:`cnnlab.data.shards.source.ShardBoxes` (shards written with ``--boxes``).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from cnnlab.data.boxes import EMPTY, BoxFixes
from cnnlab.data.sources.base import BadImage, ImageSource

EXAMPLES = 3  # paths quoted per kind of problem in a report


class ImageBoxes(NamedTuple):
    """What a format reader found for one image."""

    boxes: np.ndarray  # (N, 5) float32, cleaned
    difficult: np.ndarray  # (N,) bool
    fixes: BoxFixes
    missing: str = ""  # non-empty: no label file; says which rule looked where


@dataclass
class LabelTally:
    """Running counts over the images whose boxes were read in this process."""

    rule: str = ""  # where labels are looked for (shown with missing labels)
    images: int = 0  # images whose labels were read (or found missing, or bad)
    fixes: BoxFixes = field(default_factory=BoxFixes)
    missing: int = 0
    missing_examples: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # "label file: reason", every one

    def add(self, found: ImageBoxes) -> None:
        self.images += 1
        self.fixes += found.fixes
        if found.missing:
            self.missing += 1
            if len(self.missing_examples) < EXAMPLES:
                self.missing_examples.append(found.missing)

    def lines(self) -> list[str]:
        """A report: one line for the boxes, one per kind of problem (empty when there is nothing to say)."""
        out = [f"boxes of {self.images} images: {self.fixes.summary()}"] if self.images else []
        if self.missing:
            out.append(f"{self.missing} images have no label file and count as images without boxes"
                       f" ({self.rule}); e.g. {self.missing_examples[0]}")  # fmt: skip
        if self.bad:
            out.append(f"{len(self.bad)} label files cannot be read and their images are skipped; e.g. {self.bad[0]}")
        return out


class DetectionSource(ImageSource):
    """An :class:`ImageSource` with boxes. Subclasses implement :meth:`read_boxes` (and ``load``,
    ``__len__``, ``describe``); ``label(i)`` is the first box's class, or -1 for an image without boxes."""

    rule: str = ""  # set by sources that look for label files, for the tally

    def __init__(self) -> None:
        self.tally = LabelTally(rule=self.rule)
        self._read: dict[int, ImageBoxes | str] = {}  # index → boxes, or the reason its labels are bad

    @abstractmethod
    def read_boxes(self, index: int) -> ImageBoxes:
        """Read and clean the boxes of sample ``index``; raises :class:`BadImage` naming the label file."""

    def _entry(self, index: int) -> ImageBoxes:
        found = self._read.get(index)
        if found is None:
            try:
                found = self.read_boxes(index)
            except BadImage as e:
                found = str(e)
                self.tally.images += 1
                self.tally.bad.append(found)
            else:
                self.tally.add(found)
            self._read[index] = found
        if isinstance(found, str):
            raise BadImage(found)
        return found

    def boxes(self, index: int) -> np.ndarray:
        """Float32 ``(N, 5)`` ``[cls, xc, yc, w, h]`` of sample ``index``; :class:`BadImage` if its labels are unreadable."""
        return self._entry(index).boxes

    def difficult(self, index: int) -> np.ndarray:
        """Bool ``(N,)``: which boxes are marked difficult (VOC); all False elsewhere."""
        return self._entry(index).difficult

    def label(self, index: int) -> int:
        try:
            boxes = self.boxes(index)
        except BadImage:
            return -1
        return int(boxes[0, 0]) if len(boxes) else -1

    def scan(self) -> LabelTally:
        """Read every sample's labels now (bad ones are tallied, not raised); returns the tally."""
        for i in range(len(self)):
            try:
                self._entry(i)
            except BadImage:
                pass
        return self.tally


def no_boxes(missing: str = "") -> ImageBoxes:
    return ImageBoxes(EMPTY, np.zeros(0, dtype=bool), BoxFixes(), missing)
