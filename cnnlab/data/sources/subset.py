"""Subsets of a source: seeded random ones for quick trials (``--train-limit`` / ``--val-limit``), and
the class and per-class subsets of transfer experiments (``--classes``, ``--per-class``)."""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.data.sources.base import ImageSource
from cnnlab.errors import CnnlabError


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


class ClassSubset(SubsetSource):
    """The samples of some classes only, relabelled 0..k-1 in the order the classes were asked for
    (``--classes 5,6,7,8,9`` makes a 5-class data set whose class names stay "5".."9")."""

    def __init__(self, source: ImageSource, keep: list[int]) -> None:
        if hasattr(source, "boxes"):
            raise CnnlabError("--classes and --per-class select images of classification data; a detection set keeps every class")
        wanted = {c: i for i, c in enumerate(keep)}
        super().__init__(source, np.array([i for i, y in enumerate(source.labels()) if y in wanted], dtype=np.int64))
        self.classes = [source.classes[c] for c in keep]
        self._relabel = wanted

    def label(self, index: int) -> int:
        return self._relabel[self.source.label(self._indices[index])]


def pick_classes(source: ImageSource, spec: str) -> list[int]:
    """``--classes``: comma-separated class names, or indices when a token is not a name."""
    names = {name: i for i, name in enumerate(source.classes)}
    keep: list[int] = []
    for token in (t.strip() for t in spec.split(",")):
        if token in names:
            index = names[token]
        elif token.isdecimal() and int(token) < len(source.classes):
            index = int(token)
        else:
            shown = ", ".join(source.classes[:12]) + (", ..." if len(source.classes) > 12 else "")
            raise CnnlabError(f"--classes: {token!r} is neither a class name nor an index below {len(source.classes)}; the classes are {shown}")
        if index in keep:
            raise CnnlabError(f"--classes names class {source.classes[index]!r} twice")
        keep.append(index)
    if len(keep) < 2:
        raise CnnlabError("--classes needs at least two classes to tell apart")
    return keep


def per_class(source: ImageSource, n: int, seed: int) -> tuple[ImageSource, list[str]]:
    """``--per-class N``: N seeded random images of each class, and the classes that have fewer (all
    of theirs are taken)."""
    if n <= 0:
        return source, []
    labels = np.asarray(source.labels())
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:n] for c in range(len(source.classes))]
    short = [source.classes[c] for c, p in enumerate(picked) if len(p) < n]
    return SubsetSource(source, np.sort(np.concatenate(picked))), short
