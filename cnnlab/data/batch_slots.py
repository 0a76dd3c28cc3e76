"""Batch buffers in shared memory that a DataLoader worker reuses, instead of a fresh one per batch.

A worker hands a batch to the main process in shared memory; torch's ``default_collate`` (and
cnnlab's batch fetch before this module) makes a new shared buffer for every batch, and each of its
pages is then first touched twice, once by the worker writing it and once by the main process
reading it. On a KVM guest that costs ~4 µs a page: 144 µs per 224-px RGB sample in the worker
alone, 40 % on top of a shard sample's decode-and-crop. A worker here keeps a few *slots* instead,
writes each batch into a free one and sends only its number; the first send of a slot carries the
shared storage itself (torch passes its file descriptor), later ones ``(pid, number)``.

In the main process the batch's tensor is the slot's memory (no copy), handed to torch through
``torch.frombuffer`` on a fresh numpy view: torch holds that view for as long as any tensor shares
the storage, and when the last one goes, the view's finalizer clears the slot's header byte and
the worker may write it again. So a slot is never overwritten while anything can still read it;
a caller who keeps batches only makes the worker use more slots, and past ``MAX_SLOTS`` a one-off
buffer as before. Without workers a batch is an ordinary tensor and nothing here is involved.
"""

from __future__ import annotations

import math
import os
import weakref

import torch
from torch.utils.data import get_worker_info

HEADER = 64  # bytes before the pixels: byte 0 is 1 from the worker's write until the main process lets go
# Per worker: prefetch_factor (4) in flight, one being written, one or two held by the consumer.
# The shared memory this takes (8 × a batch per worker at most, one batch per slot) stays mapped in
# the main process until the next loader's workers start, so it is bounded rather than generous.
MAX_SLOTS = 8


class _Slot:
    def __init__(self, number: int, capacity: int) -> None:
        self.number = number
        self.capacity = capacity
        self.storage = torch.empty(HEADER + capacity, dtype=torch.uint8).share_memory_()
        self.flags = self.storage[:HEADER].numpy()
        self.sent = False  # the main process has this slot's storage mapped


class _WorkerSlots:
    """This worker process's slots (a forked child starts with none: the pid is checked)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.slots: list[_Slot] = []

    def take(self, nbytes: int) -> _Slot | None:
        """A free slot holding at least ``nbytes``, marked busy; None when all are held (the caller
        then uses a one-off buffer: never wait on the consumer, who may keep batches for good)."""
        free = [s for s in self.slots if s.flags[0] == 0]
        slot = next((s for s in free if s.capacity >= nbytes), None)
        if slot is None and len(self.slots) < MAX_SLOTS:
            slot = _Slot(len(self.slots), nbytes)
            self.slots.append(slot)
        elif slot is None and free:  # free but too small (a larger batch than before): replace one
            slot = self.slots[free[0].number] = _Slot(free[0].number, nbytes)
        if slot is not None:
            slot.flags[0] = 1
        return slot


_worker_slots: _WorkerSlots | None = None


def _slots() -> _WorkerSlots:
    global _worker_slots
    if _worker_slots is None or _worker_slots.pid != os.getpid():
        _worker_slots = _WorkerSlots()
    return _worker_slots


class SentImages:
    """A batch's images in a worker's slot, on their way to the main process, where unpickling
    makes them an ``(n, C, H, W)`` uint8 tensor (channels_last) over the slot's memory."""

    def __init__(self, slot: _Slot, rows: int, shape: tuple[int, ...]) -> None:
        self.slot, self.rows, self.shape = slot, rows, shape

    def __reduce__(self):
        storage = None if self.slot.sent else self.slot.storage
        self.slot.sent = True
        return _receive, (os.getpid(), self.slot.number, storage, self.rows, self.shape)


_mapped: dict[tuple[int, int], torch.Tensor] = {}  # main process: (worker pid, slot number) → storage


def _forget_dead_workers() -> None:
    for pid in {p for p, _ in _mapped}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            for key in [k for k in _mapped if k[0] == pid]:
                del _mapped[key]
        except PermissionError:  # a live process of someone else's (the pid was reused): keep
            pass


def _release(flags) -> None:
    flags[0] = 0


def _receive(pid: int, number: int, storage: torch.Tensor | None, rows: int, shape: tuple[int, ...]) -> torch.Tensor:
    if storage is not None:
        if not any(p == pid for p, _ in _mapped):
            _forget_dead_workers()  # a new worker: the last epoch's are gone
        _mapped[(pid, number)] = storage
    slot = _mapped[(pid, number)]
    pixels = slot[HEADER : HEADER + math.prod(shape)].numpy()  # a fresh view: its lifetime is the lease
    weakref.finalize(pixels, _release, slot[:HEADER].numpy())
    return torch.frombuffer(pixels, dtype=torch.uint8).view(shape)[:rows].permute(0, 3, 1, 2)


class BatchBuffer:
    """Where a batch fetch writes its ``(B, H, W, C)`` uint8 images: a slot in a DataLoader worker,
    an ordinary tensor otherwise. ``array`` to write into, then ``images(n)`` for the Batch."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        nbytes = math.prod(self.shape)
        self.slot = _slots().take(nbytes) if get_worker_info() is not None else None
        if self.slot is not None:
            self.array = self.slot.storage[HEADER : HEADER + nbytes].numpy().reshape(self.shape)
        else:
            self.tensor = torch.empty(self.shape, dtype=torch.uint8)
            if get_worker_info() is not None:  # every slot is held: a one-off shared buffer
                self.tensor.share_memory_()
            self.array = self.tensor.numpy()

    def images(self, rows: int) -> "torch.Tensor | SentImages":
        """The first ``rows`` images as ``(rows, C, H, W)`` (in a worker: the slot, to be sent)."""
        if self.slot is not None:
            return SentImages(self.slot, rows, self.shape)
        return self.tensor[:rows].permute(0, 3, 1, 2)
