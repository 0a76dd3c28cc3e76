"""A seeded random subset of a source, for quick trials (``--train-limit`` / ``--val-limit``)."""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.data.sources.base import ImageSource


class SubsetSource(ImageSource):
    def __init__(self, source: ImageSource, indices: np.ndarray) -> None:
        self.source, self.classes = source, list(source.classes)
        self._indices = [int(i) for i in indices]

    @classmethod
    def limit(cls, source: ImageSource, n: int, seed: int) -> ImageSource:
        """``n`` samples drawn without replacement (the whole source when ``n`` is 0 or too big)."""
        if n <= 0 or n >= len(source):
            return source
        picked = np.sort(np.random.default_rng(seed).permutation(len(source))[:n])
        return (BoxSubset if hasattr(source, "boxes") else cls)(source, picked)

    def __len__(self) -> int:
        return len(self._indices)

    def label(self, index: int) -> int:
        return self.source.label(self._indices[index])

    def load(self, index: int) -> torch.Tensor:
        return self.source.load(self._indices[index])

    def describe(self, index: int) -> str:
        return self.source.describe(self._indices[index])


class BoxSubset(SubsetSource):
    """A subset of a detection source: its samples keep their boxes."""

    def boxes(self, index: int) -> np.ndarray:
        return self.source.boxes(self._indices[index])

    def difficult(self, index: int) -> np.ndarray:
        return self.source.difficult(self._indices[index])
