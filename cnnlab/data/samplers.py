"""Samplers beside :class:`~cnnlab.data.loader.ResumableSampler` that keep its contract:
``(epoch, index)`` keys, ``set_epoch(epoch, start)``, this rank's share only, and an order that is a
function of (seed, epoch) — so runs repeat, resume mid-epoch, and split over ranks without overlap.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from cnnlab.errors import CnnlabError


class ClassBalancedSampler(Sampler[tuple[int, int]]):
    """``--balance sampler``: each draw picks a class, then one of its images uniformly (with
    replacement). An image of a class with n_c images has weight n_c^-alpha, so a class is drawn with
    probability ∝ n_c^(1 - alpha): ``alpha=1`` (the default) draws every class equally often, 0.5 in
    proportion to the square root of its size (rare classes oversampled less, so their few images
    are repeated less), 0 as the data stands. An epoch is as many draws as there are images, a
    sequence that depends on (seed, epoch) only; rank r takes draws r, r + W, … of it (equal shares:
    the last ``n % W`` draws are left out), so the union over ranks is the one-process epoch's first
    ``n - n % W`` draws."""

    def __init__(self, labels: Sequence[int], seed: int, rank: int = 0, world: int = 1, alpha: float = 1.0) -> None:
        if not labels:
            raise CnnlabError("--balance sampler: the training set is empty")
        by_class: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            by_class.setdefault(int(label), []).append(index)
        self.members = [torch.tensor(v, dtype=torch.int64) for _, v in sorted(by_class.items())]
        self.n, self.seed, self.rank, self.world = len(labels), seed, rank, world
        if not 0 <= alpha <= 1:
            raise CnnlabError(f"--balance-alpha must be between 0 (natural frequencies) and 1 (every class equally often), got {alpha}")
        sizes = torch.tensor([len(m) for m in self.members], dtype=torch.float64)
        self.class_p = None if alpha == 1 else sizes ** (1 - alpha) / (sizes ** (1 - alpha)).sum()
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        """This rank's whole order for the current epoch (``start`` not applied)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 10_007 * self.epoch + 17)
        if self.class_p is None:  # every class equally often
            classes = torch.randint(len(self.members), (self.n,), generator=g)
        else:
            classes = torch.multinomial(self.class_p, self.n, replacement=True, generator=g)
        picks = torch.rand(self.n, generator=g, dtype=torch.float64)
        sizes = torch.tensor([len(m) for m in self.members])
        within = (picks * sizes[classes]).long()
        order = [int(self.members[c][w]) for c, w in zip(classes.tolist(), within.tolist())]
        return order[: self.n - self.n % self.world][self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices()[self.start :]:
            yield (self.epoch, i)

    def __len__(self) -> int:
        return max(0, self.n // self.world - self.start)
