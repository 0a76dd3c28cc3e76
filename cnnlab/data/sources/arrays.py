"""A source over images already in memory: the built-ins, MNIST idx files and CIFAR batches."""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.data.sources.base import ImageSource


class ArraySource(ImageSource):
    """``images`` is uint8 ``(N, C, H, W)`` with C in {1, 3}; ``labels`` is ``(N,)`` ints.

    ``origin`` maps each sample back to its row in the original file, for :meth:`describe`.
    Plain numpy arrays, so the source pickles cheaply into DataLoader workers.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: list[str],
        name: str,
        origin: np.ndarray | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be uint8 (N, C, H, W) with C in 1 or 3, got {images.dtype} {images.shape}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self._labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.name = name
        self.origin = np.arange(len(images)) if origin is None else np.asarray(origin, dtype=np.int64)

    def subset(self, indices: np.ndarray, name: str | None = None) -> ArraySource:
        return ArraySource(self.images[indices], self._labels[indices], self.classes, name or self.name, self.origin[indices])

    def __len__(self) -> int:
        return len(self.images)

    def label(self, index: int) -> int:
        return int(self._labels[index])

    def labels(self) -> list[int]:
        return self._labels.tolist()

    def load(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.images[index].copy())  # (C, H, W) uint8, owned by the caller

    def describe(self, index: int) -> str:
        return f"{self.name}[{int(self.origin[index])}]"
