"""The images of ``cnnlab darknet classifier train``, for the engine's loader.

Darknet's order counts samples over the whole run: sample ``k`` is image ``order(k)`` — epoch
``k // n`` walks a seeded permutation of the ``n`` images — so the order depends only on the
``seen`` counter and a run resumed from a backup continues it. :class:`DarknetSampler` yields the
keys ``(k, image)`` for ``k = seen …``; :class:`TrainSamples` loads and augments them, seeded by
``k`` (:mod:`cnnlab.darknet.augment`). An unreadable image is replaced by the next readable one of
the order, so every update still has ``batch × subdivisions`` images; the replaced image reaches
the engine's :class:`~cnnlab.data.loader.BadImageLog` through :class:`Feed`, which also times the
loading for darknet's ``Loaded:`` line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from cnnlab.darknet.augment import Augment
from cnnlab.darknet.cfg import resolve_data_path
from cnnlab.darknet.preprocess import load_image, preprocess
from cnnlab.data.loader import BadImageLog, Batch, PerImageDataset
from cnnlab.errors import CnnlabError


class RunOrder:
    """Sample ``k`` of the run → index of its image among ``n``."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __call__(self, k: int) -> int:
        epoch, pos = divmod(k, self.n)
        return int(_permutation(self.seed, epoch, self.n)[pos])


@lru_cache(maxsize=2)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class DarknetSampler(Sampler[tuple[int, int]]):
    """Keys ``(k, order(k))`` for the samples ``start … end - 1`` of the run."""

    def __init__(self, order: RunOrder, start: int, end: int) -> None:
        self.order, self.start, self.end = order, start, end

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for k in range(self.start, self.end):
            yield (k, self.order(k))

    def __len__(self) -> int:
        return max(0, self.end - self.start)


class TrainSamples(PerImageDataset):
    """Key ``(k, index)`` → (augmented image, label, index). An image that cannot be read is
    remembered (never tried again) and replaced by the next readable one of the order."""

    def __init__(self, items: list[tuple[str, int]], data_file: Path, order: RunOrder, augment: Augment, listing: Path) -> None:
        self.items, self.data_file, self.order, self.augment, self.listing = items, data_file, order, augment, listing
        self.bad: dict[str, str] = {}  # path → "path: reason", every unreadable image met so far
        self.new_bad: list[str] = []  # reasons not yet handed to the engine's log

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        k, index = key
        for j in range(k, k + len(self.items)):
            i = index if j == k else self.order(j)
            path, label = self.items[i]
            if path in self.bad:
                continue
            try:
                image, target = self.make(i, k)
            except CnnlabError as e:
                self.bad[path] = f"{path}: {e}"
                self.new_bad.append(self.bad[path])
                continue
            return image, target, i
        raise CnnlabError(f"none of the images in {self.listing} can be read")

    def make(self, i: int, k: int) -> tuple[torch.Tensor, int]:
        """Sample ``k`` of the run from image ``i``: the augmented image and its target (raises
        :class:`CnnlabError` when it cannot be read)."""
        path, label = self.items[i]
        image = load_image(resolve_data_path(path, self.data_file))
        return torch.from_numpy(self.augment(image, k)), label


class Feed:
    """The loader's batches, each carrying the unreadable images its samples replaced (so the
    engine's :class:`BadImageLog` counts them) and timed: ``loaded`` sums the seconds spent loading
    since :meth:`take_loaded` last read it. The loader runs in this process (``workers=0``), so the
    dataset's ``new_bad`` belongs to the batch just loaded."""

    def __init__(self, loader, samples: TrainSamples) -> None:
        self.loader, self.samples = loader, samples
        self.loaded = 0.0

    def __iter__(self) -> Iterator[Batch]:
        batches = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            self.loaded += time.perf_counter() - t0
            if batch is None:
                return
            batch.bad, self.samples.new_bad = batch.bad + self.samples.new_bad, []
            yield batch

    def take_loaded(self) -> float:
        seconds, self.loaded = self.loaded, 0.0
        return seconds


class ListBadImages(BadImageLog):
    """The engine's count of unreadable images, with darknet's limit: more than 1 % of the training
    list (and more than one image) stops the run."""

    def __init__(self, n: int, listing: Path) -> None:
        super().__init__(max(1, n // 100) / n)
        self.n, self.listing = n, listing

    def check(self, min_seen: int = 0, totals: tuple[int, int] | None = None) -> None:
        """The engine's test, on the images of the list rather than the samples drawn; darknet's words."""
        try:
            super().check(min_seen=0, totals=(len(self.bad), self.n))
        except CnnlabError:
            raise CnnlabError(f"{len(self.bad)} of the {self.n} images in {self.listing} cannot be read (limit 1 %); fix or remove them") from None


class ValidImages(PerImageDataset):
    """The ``valid=`` list with the flavor's classifier preprocessing (as ``classifier valid``):
    index → (image, label, index), or (None, reason, index) for an image that cannot be read."""

    def __init__(self, items: list[tuple[str, int]], data_file: Path, width: int, height: int, flavor: str) -> None:
        self.items, self.data_file, self.size, self.flavor = items, data_file, (width, height), flavor

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        try:
            image = load_image(resolve_data_path(path, self.data_file))
        except CnnlabError as e:
            return None, f"{path}: {e}", index
        return torch.from_numpy(preprocess(image, *self.size, self.flavor, "classify")), label, index
