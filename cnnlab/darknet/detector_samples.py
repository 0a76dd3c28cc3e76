"""The images and boxes of ``cnnlab darknet detector train`` and of its ``-map`` evaluation.

Training samples follow :mod:`cnnlab.darknet.samples` (sample ``k`` of the run is image
``order(k)``; an unreadable image is replaced by the next readable one) and add the boxes: the
YOLO label file found by the flavor's rule, augmented with the image by darknet's detection
augmentation (:mod:`cnnlab.darknet.box_augment`), seeded by ``k``. With ``random=1`` the network
size changes every 10 updates; the size of update ``u`` is drawn from a generator seeded by
``u // 10``, so every image of a micro-batch has the same size and a resumed run draws the same sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.darknet.box_augment import BoxAugment, eval_transform
from cnnlab.darknet.samples import RunOrder, TrainSamples
from cnnlab.data.loader import PerImageDataset
from cnnlab.data.sources.base import BadImage
from cnnlab.data.sources.yolo_labels import YoloSource
from cnnlab.errors import CnnlabError


class NetSizes:
    """The input size of each update: the cfg's, or with ``random=`` a draw every 10 updates (and the
    largest size for the last 100 updates, as AlexeyAB does)."""

    def __init__(self, width: int, height: int, augment: BoxAugment, max_batches: int, seed: int) -> None:
        self.width, self.height, self.augment, self.max_batches, self.seed = width, height, augment, max_batches, seed

    def __call__(self, update: int) -> tuple[int, int]:
        if not self.augment.random:
            return self.width, self.height
        rng = np.random.default_rng([self.seed, 7, update // 10])
        return self.augment.net_size(rng, self.width, self.height, biggest=update >= self.max_batches - 100)


class DetectionSamples(TrainSamples):
    """Key ``(k, index)`` → (augmented image, its (N, 5) boxes, index)."""

    def __init__(self, paths: list[str], labels: YoloSource, data_file: Path, order: RunOrder, augment: BoxAugment,
                 sizes: NetSizes, images_per_update: int, seed: int, listing: Path) -> None:
        super().__init__([(p, -1) for p in paths], data_file, order, augment, listing)
        self.labels, self.sizes, self.images_per_update, self.seed = labels, sizes, images_per_update, seed

    def make(self, i: int, k: int) -> tuple[torch.Tensor, np.ndarray]:
        try:
            image, boxes = self.labels.load(i), self.labels.boxes(i)
        except BadImage as e:
            raise CnnlabError(str(e)) from None
        w, h = self.sizes(k // self.images_per_update)
        rng = np.random.default_rng([self.seed, k])
        if self.augment.draw_mosaic(rng):  # three more images of the list, drawn by the sample's seed
            others = [self._readable(int(j)) for j in rng.integers(0, len(self.items), 3)]
            return self.augment.mosaic([(image, boxes), *others], rng, w, h)
        return self.augment(image, boxes, rng, w, h)

    def _readable(self, i: int) -> tuple[torch.Tensor, np.ndarray]:
        """Image ``i`` and its boxes for a mosaic tile, or the next readable one after it."""
        for j in (i + d for d in range(len(self.items))):
            j %= len(self.items)
            try:
                return self.labels.load(j), self.labels.boxes(j)
            except BadImage:
                continue
        raise CnnlabError(f"none of the images in {self.listing} can be read")


class ValidDetections(PerImageDataset):
    """The ``valid=`` list as ``validate_detector_map`` feeds it: index → (image at the network size,
    boxes, index), or (None, reason, index) for an image or label file that cannot be read."""

    def __init__(self, paths: list[str], labels: YoloSource, data_file: Path, width: int, height: int, letter: bool) -> None:
        self.paths, self.labels, self.data_file = paths, labels, data_file
        self.width, self.height, self.letter = width, height, letter
        self.sizes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            image, boxes = self.labels.load(index), self.labels.boxes(index)
        except BadImage as e:
            return None, f"{path}: {e}", index
        self.sizes[index] = (image.shape[2], image.shape[1])
        return eval_transform(image, self.width, self.height, self.letter), boxes, index

    def size_of(self, index: int) -> tuple[int, int]:
        """The original (width, height) of image ``index`` (loaded in this process: workers=0)."""
        return self.sizes[index]
