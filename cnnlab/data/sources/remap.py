"""Evaluate a model on data whose class list is ordered (or sized) differently."""

from __future__ import annotations

import torch

from cnnlab.data.sources.base import ImageSource
from cnnlab.errors import CnnlabError


class RemappedSource(ImageSource):
    """The same samples, labelled by position in ``classes`` (matched by exact name)."""

    def __init__(self, source: ImageSource, classes: list[str]) -> None:
        index = {name: i for i, name in enumerate(classes)}
        unknown = [c for c in source.classes if c not in index]
        if unknown:
            raise CnnlabError(
                f"the data has classes the model does not know: {', '.join(unknown[:5])}"
                f"{' …' if len(unknown) > 5 else ''}; evaluate on data with the model's classes"
            )
        self.source, self.classes = source, list(classes)
        self._map = [index[c] for c in source.classes]

    @classmethod
    def to_classes(cls, source: ImageSource, classes: list[str]) -> ImageSource:
        return source if list(source.classes) == list(classes) else cls(source, classes)

    def __len__(self) -> int:
        return len(self.source)

    def label(self, index: int) -> int:
        return self._map[self.source.label(index)]

    def load(self, index: int) -> torch.Tensor:
        return self.source.load(index)

    def describe(self, index: int) -> str:
        return self.source.describe(index)
