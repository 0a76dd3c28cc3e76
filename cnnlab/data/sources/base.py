"""The interface every data source implements.

A source is an indexable list of labelled images in one split. It knows its class names and each
sample's label without decoding anything; ``load(i)`` decodes one image to a uint8 ``(C, H, W)``
tensor (C = 1 or 3) or raises :class:`BadImage`, which the loader counts and skips.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class BadImage(Exception):
    """A sample that cannot be used (corrupt, truncated, not an image); skipped and counted."""


class ImageSource(ABC):
    classes: list[str]  # index → class name; the label is the position in this list

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def label(self, index: int) -> int:
        """Class index of sample ``index`` (cheap: no decoding)."""

    @abstractmethod
    def load(self, index: int) -> torch.Tensor:
        """Decoded uint8 image ``(C, H, W)``, C in {1, 3}; raises :class:`BadImage`."""

    def describe(self, index: int) -> str:
        """How to find the sample again in a report: a path, or ``name[index]``."""
        return f"{type(self).__name__}[{index}]"

    def labels(self) -> list[int]:
        return [self.label(i) for i in range(len(self))]
