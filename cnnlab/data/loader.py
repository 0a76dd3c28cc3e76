"""Batches from an :class:`ImageSource`: deterministic, resumable, and tolerant of bad images.

Determinism without shared state: the sampler yields ``(epoch, index)`` keys and each sample's
augmentation is seeded from ``(seed, epoch, index)``, so a batch is the same whatever the number
of workers, and a run resumed mid-epoch sees exactly the batches it would have seen.
Unreadable images come back as ``None`` and are dropped in ``collate``, which reports them so the
engine can count, name and (past ``max_bad_fraction``) stop on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnlab import threads
from cnnlab.data.sources.base import BadImage, ImageSource
from cnnlab.errors import CnnlabError


def sample_seed(seed: int, epoch: int, index: int) -> int:
    # A fixed mixing of the three numbers (Python's hash() of ints is not salted, but be explicit).
    return (seed * 1_000_003 + epoch * 998_244_353 + index * 2_654_435_761) % (2**63 - 1)


class ResumableSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)``; a seeded permutation per epoch, sharded over ``world`` ranks.

    ``start`` skips the first samples of this rank's share (a resumed epoch). With ``drop_last``,
    every rank gets the same number of samples (DDP needs equal step counts).
    """

    def __init__(self, n: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1, drop_last: bool = False) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world, self.drop_last = rank, world, drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        """This rank's whole order for the current epoch (``start`` not applied)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + 10_007 * self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.drop_last:
            order = order[: self.n - self.n % self.world]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices()[self.start :]:
            yield (self.epoch, i)

    def __len__(self) -> int:
        return max(0, len(self.indices()) - self.start)


class PerImageDataset(Dataset):
    """A map-style dataset whose items are per-image work (decode, augment): a batch drawn in the main
    process (``workers: 0``) runs on one intra-op thread (:func:`cnnlab.threads.one_thread`)."""

    def __getitems__(self, keys: list) -> list:  # what the DataLoader fetches when a dataset has it
        with threads.one_thread():
            return [self[key] for key in keys]


class TransformedSource(PerImageDataset):
    """``(epoch, index)`` → ``(image, label, index)``, or ``(None, reason, index)`` for a bad image."""

    def __init__(self, source: ImageSource, transform: Callable[[torch.Tensor], torch.Tensor], seed: int) -> None:
        self.source, self.transform, self.seed = source, transform, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        try:
            img = self.source.load(index)
        except BadImage as e:
            return None, f"{self.source.describe(index)}: {e}", index
        # Seed the augmentation per sample, without disturbing the caller's RNG (workers=0 shares it).
        # Only the CPU generator: torch.manual_seed would also queue lazy CUDA seeding, recording a
        # Python stack trace each call (≈1 ms per sample, more than LeNet's whole step).
        generator = torch.default_generator
        saved = generator.get_state()
        generator.manual_seed(sample_seed(self.seed, epoch, index))
        try:
            img = self.transform(img)
        finally:
            generator.set_state(saved)
        return img, self.source.label(index), index


@dataclass
class Batch:
    images: torch.Tensor  # (B, C, H, W) uint8, or (B, 10, C, H, W) for ten-crop
    labels: torch.Tensor  # (B,) int64
    indices: torch.Tensor  # (B,) positions in the source
    bad: list[str] = field(default_factory=list)  # "path: reason" of the samples dropped here
    size: int = 0  # samples drawn, good and bad
    # Detection: (B, M, 5) float32 [cls, xc, yc, w, h] relative to the image, padded with cls = -1
    # rows (M = most boxes of an image in the batch); labels are then -1.
    boxes: torch.Tensor | None = None

    def __reduce__(self):
        # From a DataLoader worker, labels and indices travel as plain lists: torch would send each
        # small tensor through a shared-memory file of its own and a socket to pass its descriptor,
        # ~0.4 ms of the main process's time per tensor per batch.
        return _rebuild_batch, (self.images, self.labels.tolist(), self.indices.tolist(), self.bad, self.size, self.boxes)

    def pin_memory(self) -> "Batch":
        self.images, self.labels = self.images.pin_memory(), self.labels.pin_memory()
        if self.boxes is not None:
            self.boxes = self.boxes.pin_memory()
        return self


def _rebuild_batch(images, labels: list[int], indices: list[int], bad: list[str], size: int, boxes) -> Batch:
    return Batch(images, torch.tensor(labels, dtype=torch.int64), torch.tensor(indices, dtype=torch.int64), bad, size, boxes)


def pad_boxes(per_image: list[np.ndarray]) -> torch.Tensor:
    """Images' (N_i, 5) box arrays as one (B, max N_i, 5) tensor padded with cls = -1 rows."""
    out = torch.full((len(per_image), max([len(b) for b in per_image] + [1]), 5), -1.0)
    for k, b in enumerate(per_image):
        out[k, : len(b)] = torch.as_tensor(np.asarray(b, np.float32).reshape(-1, 5))
    return out


def collate(items: "list | Batch") -> Batch:
    """Samples ``(image, target, index)`` (image None: target is why it is bad) into a :class:`Batch`;
    a target is a class index, or an (N, 5) box array for detection. A dataset whose
    ``__getitems__`` already made the Batch hands it through."""
    if isinstance(items, Batch):
        return items
    good = [(img, target, i) for img, target, i in items if img is not None]
    bad = [reason for img, reason, _ in items if img is None]
    boxes = None
    if good:
        images = torch.stack([g[0] for g in good])
        indices = torch.tensor([g[2] for g in good], dtype=torch.int64)
        if isinstance(good[0][1], np.ndarray):
            boxes = pad_boxes([g[1] for g in good])
            labels = torch.full((len(good),), -1, dtype=torch.int64)
        else:
            labels = torch.tensor([g[1] for g in good], dtype=torch.int64)
    else:
        images, labels, indices = torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
    return Batch(images, labels, indices, bad, len(items), boxes)


def make_loader(
    source: ImageSource,
    transform: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    workers: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
    sampler: Sampler | None = None,
) -> DataLoader:
    """Batches of ``source`` through ``transform``: this rank's share of a seeded order (or ``sampler``'s)."""
    sampler = sampler or ResumableSampler(len(source), seed, shuffle, rank, world, drop_last=drop_last)
    return batch_loader(TransformedSource(source, transform, seed), sampler, batch_size, workers, drop_last, pin_memory, seed)


def batch_loader(
    dataset: Dataset, sampler: Sampler, batch_size: int, workers: int, drop_last: bool, pin_memory: bool, seed: int
) -> DataLoader:
    """The DataLoader every cnnlab loader uses: :func:`collate` into :class:`Batch`, resumable sampler."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
        # Workers' base seed comes from this generator, not the global RNG, so creating an
        # iterator does not shift the stream that dropout draws from (exact resume).
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=threads.worker_init,  # one compute thread per worker: the cores are the network's
    )


class BadImageLog:
    """Counts and remembers unreadable samples; stops the run past ``max_fraction``."""

    def __init__(self, max_fraction: float) -> None:
        self.max_fraction = max_fraction
        self.seen = 0
        self.bad: dict[str, None] = {}  # ordered set of "path: reason"

    def update(self, batch: Batch) -> None:
        self.seen += batch.size
        for reason in batch.bad:
            self.bad[reason] = None

    def restore(self, bad: list[str], seen: int) -> None:
        """Continue counting from a checkpoint's figures (a run resumed mid-epoch)."""
        self.bad = dict.fromkeys(bad)
        self.seen = seen

    def check(self, min_seen: int = 100, totals: tuple[int, int] | None = None) -> None:
        """Raise once enough samples were seen to judge the fraction (or at the end: min_seen=0).
        ``totals``: (bad, seen) summed over every process, when the limit is global."""
        n_bad, seen = totals if totals is not None else (len(self.bad), self.seen)
        if seen >= min_seen and seen and n_bad / seen > self.max_fraction:
            first = next(iter(self.bad), "on another process")
            raise CnnlabError(
                f"{n_bad} of {seen} images could not be read (more than "
                f"{self.max_fraction:.0%}), e.g. {first}; fix or remove them, or raise --max-bad-fraction"
            )

    def report(self) -> str:
        if not self.bad:
            return f"all {self.seen} images read"
        lines = [f"skipped {len(self.bad)} unreadable image(s) of {self.seen}:"]
        lines += [f"  {r}" for r in list(self.bad)[:20]]
        if len(self.bad) > 20:
            lines.append(f"  … and {len(self.bad) - 20} more (see the run's summary.json)")
        return "\n".join(lines)
