"""Run a large CPU batch as chunks: of the size measured fastest, one core to a chunk.

**Chunk size.** On a CPU a batch is not free: oneDNN's convolutions walk the whole batch layer by
layer, and once a layer's activations for the batch outgrow the caches each layer streams them
through memory. darknet.cfg at 256 (one thread, fp32, AMD EPYC Zen 4) costs 11.1 ms an image one at
a time and 16.1 ms an image in batches of 32; in bf16 the best chunk is 8 (5.8 ms against 8.6 at
32); ResNet-18 is flatter (33-38 ms at every size). The optimum depends on the network, the
precision, the caches and the threads, so no rule of bytes predicts it: :class:`Chunker` times each
power-of-two size on the real batches (every image is still computed exactly once), then keeps the
fastest.

**Streams.** With several threads, splitting every convolution across them costs a wake-up and a
barrier per layer, and a thread held up by another process stalls the rest at each barrier.
Independent chunks on one thread each (what OpenVINO calls streams) need neither: each worker
pulls the next chunk, so a slowed core simply takes fewer. Measured (darknet.cfg, batches of 8,
two threads, OpenMP threads sleeping between regions as cnnlab sets them): 128 images/s with both
threads on each layer, 184 with two single-threaded streams (one thread: 93).

Neither torch nor oneDNN offers either (oneDNN picks kernels, not how much of a batch to feed them
or how to spread a batch over cores), which is why they are written here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch

Output = torch.Tensor | list[torch.Tensor]
Run = Callable[[torch.Tensor], Output]

SAMPLES = 2  # timed runs per chunk size, after one untimed run (its first call builds oneDNN's primitives)


class Piece(NamedTuple):
    start: int
    size: int
    timed: bool  # part of the exploration: its time per image is recorded


class Chunker:
    """Cuts batches into chunks; while exploring, each batch spends its images on the chunk sizes
    still to be timed (1, 2, 4, ... up to the largest batch seen, shared out between ``streams``:
    a chunk bigger than its share would leave a stream idle, which a per-image time does not
    show), the rest at the best size so far. Once every size has ``SAMPLES`` timings, :attr:`size`
    is the fastest per image."""

    def __init__(self, streams: int = 1) -> None:
        self.streams = max(1, streams)
        self.times: dict[int, list[float]] = {}  # chunk size -> seconds per image of each timed run
        self._planned: dict[int, int] = {}  # chunk size -> runs planned (the first is not timed)
        self._largest = 0
        self._lock = threading.Lock()  # streams record their timings concurrently

    @property
    def size(self) -> int | None:
        """The chosen chunk size, or None while some size still needs timing."""
        with self._lock:
            if not self._largest or any(len(self.times.get(s, [])) < SAMPLES for s in self._candidates()):
                return None
            return self._best()

    def plan(self, n: int) -> list[Piece]:
        """The chunks of a batch of ``n``, in order."""
        with self._lock:
            self._largest = max(self._largest, n)
            pieces, start = [], 0
            while start < n:
                size, timed = self._next(n - start)
                pieces.append(Piece(start, size, timed))
                start += size
            return pieces

    def record(self, size: int, seconds: float) -> None:
        with self._lock:
            self.times.setdefault(size, []).append(seconds / size)

    def _next(self, left: int) -> tuple[int, bool]:
        for size in self._candidates():
            runs = self._planned.get(size, 0)
            if runs < SAMPLES + 1 and size <= left:
                self._planned[size] = runs + 1
                return size, runs > 0
        return min(left, self._best() or self._candidates()[-1]), False

    def _candidates(self) -> list[int]:
        sizes, size = [], 1
        while size <= max(1, self._largest // self.streams):
            sizes.append(size)
            size *= 2
        return sizes

    def _best(self) -> int | None:
        timed = {s: min(t) for s, t in self.times.items() if len(t) >= SAMPLES}
        return min(timed, key=timed.__getitem__) if timed else None


class BatchRunner:
    """``runner(run, x)``: ``run`` over the chunks of ``x`` (along dim 0), on ``streams`` worker
    threads of ``threads_per_stream`` intra-op threads each when ``streams > 1``; outputs
    concatenated in order."""

    def __init__(self, streams: int, threads_per_stream: int = 1) -> None:
        self.chunker = Chunker(streams)
        self.threads_per_stream = threads_per_stream
        self._pool: ThreadPoolExecutor | None = None

    @property
    def streams(self) -> int:
        return self.chunker.streams

    @classmethod
    def for_threads(cls, threads: int, batch: int) -> "BatchRunner":
        """A stream per thread, but no more streams than the batch has images (a 64-core machine
        running batches of 32 gets 32 streams of 2 threads)."""
        streams = max(1, min(threads, batch))
        return cls(streams, max(1, threads // streams))

    def __call__(self, run: Run, x: torch.Tensor) -> Output:
        pieces = self.chunker.plan(x.shape[0])
        if self.streams > 1 and len(pieces) > 1:
            outputs = list(self._executor().map(lambda p: self._in_stream(run, x, p), pieces))
        else:
            outputs = [self._piece(run, x, p) for p in pieces]
        return _concat(outputs)

    def _piece(self, run: Run, x: torch.Tensor, p: Piece) -> Output:
        part = x[p.start : p.start + p.size]
        if not p.timed:
            return run(part)
        t0 = time.perf_counter()
        out = run(part)
        self.chunker.record(p.size, time.perf_counter() - t0)
        return out

    def _in_stream(self, run: Run, x: torch.Tensor, p: Piece) -> Output:
        with torch.inference_mode():  # thread-local, so entered in every worker
            return self._piece(run, x, p)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            # torch.set_num_threads in a worker sets that thread's OpenMP team size only; it also clears
            # a oneDNN cache, so every worker is started (and has run it) before any chunk runs
            pool = ThreadPoolExecutor(self.streams, "cnnlab-stream", initializer=torch.set_num_threads,
                                      initargs=(self.threads_per_stream,))  # fmt: skip
            started = threading.Barrier(self.streams)
            list(pool.map(lambda _: started.wait(), range(self.streams)))
            self._pool = pool
        return self._pool


def _concat(outputs: list[Output]) -> Output:
    if len(outputs) == 1:
        return outputs[0]
    if isinstance(outputs[0], torch.Tensor):
        return torch.cat(outputs)
    return [torch.cat(parts) for parts in zip(*outputs)]
