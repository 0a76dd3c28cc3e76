"""Run a large CPU batch as smaller chunks, with the chunk size measured on the batches themselves.

On a CPU a batch is not free: oneDNN's convolutions walk the whole batch layer by layer, and once
a layer's activations for the batch outgrow the caches each layer streams them through memory.
darknet.cfg at 256 (one thread, fp32, AMD EPYC Zen 4) costs 11.1 ms an image one at a time and
16.1 ms an image in batches of 32; in bf16 the best chunk is 8 (5.8 ms against 8.6 at 32); ResNet-18
is flatter (33-38 ms at every size). Where the optimum lies depends on the network, the precision,
the cache sizes and the thread count, so no rule of bytes predicts it: :class:`Chunker` times each
power-of-two chunk size on the real batches it is given (every image is still computed exactly
once), then keeps the fastest.

Neither torch nor oneDNN offers this (oneDNN picks kernels, not how much of a batch to feed them),
which is why it is written here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

Output = torch.Tensor | list[torch.Tensor]

SAMPLES = 2  # timed runs per chunk size, after one untimed run (its first call builds oneDNN's primitives)


class Chunker:
    """``chunker(run, x)``: ``run`` over ``x`` in chunks along dim 0, outputs concatenated.

    While exploring, each call spends its images on the chunk sizes still to be timed (1, 2, 4, ...
    up to the largest batch seen), the rest at the best size so far; once every size has
    ``SAMPLES`` timings, :attr:`size` is the one with the lowest time per image."""

    def __init__(self) -> None:
        self.times: dict[int, list[float]] = {}  # chunk size -> seconds per image of each timed run
        self._runs: dict[int, int] = {}  # chunk size -> runs so far (the first is not timed)
        self._largest = 0

    @property
    def size(self) -> int | None:
        """The chosen chunk size, or None while some size still needs timing."""
        if not self._largest or self._pending():
            return None
        return self._best()

    def __call__(self, run: Callable[[torch.Tensor], Output], x: torch.Tensor) -> Output:
        n = x.shape[0]
        self._largest = max(self._largest, n)
        outputs, start = [], 0
        while start < n:
            size = self._next_size(n - start)
            outputs.append(self._timed(run, x[start : start + size], size))
            start += size
        return _concat(outputs)

    def _next_size(self, left: int) -> int:
        for size in self._pending():
            if size <= left:
                return size
        best = self._best()
        return min(left, best) if best else left

    def _timed(self, run: Callable[[torch.Tensor], Output], x: torch.Tensor, size: int) -> Output:
        if size not in self._pending():
            return run(x)
        t0 = time.perf_counter()
        out = run(x)
        elapsed = time.perf_counter() - t0
        self._runs[size] = self._runs.get(size, 0) + 1
        if self._runs[size] > 1:
            self.times.setdefault(size, []).append(elapsed / size)
        return out

    def _candidates(self) -> list[int]:
        sizes, size = [], 1
        while size <= self._largest:
            sizes.append(size)
            size *= 2
        return sizes

    def _pending(self) -> list[int]:
        return [s for s in self._candidates() if len(self.times.get(s, [])) < SAMPLES]

    def _best(self) -> int | None:
        timed = {s: min(t) for s, t in self.times.items() if len(t) >= SAMPLES}
        return min(timed, key=timed.__getitem__) if timed else None


def _concat(outputs: list[Output]) -> Output:
    if len(outputs) == 1:
        return outputs[0]
    if isinstance(outputs[0], torch.Tensor):
        return torch.cat(outputs)
    return [torch.cat(parts) for parts in zip(*outputs)]
