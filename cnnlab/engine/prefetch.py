"""Decode images ahead of the network: a background thread runs ``load`` on the next items while the
caller's network works on the current one, and hands the results over in the input's order.

Decoding (PIL, numpy) releases the GIL for most of its time, so on a machine with a core to spare the
per-image decode and resize leave the critical path. Without one (the network's threads already use
every core) the thread would only take turns with them: an OpenMP region waits for its slowest
thread, so every layer pays for the decode (darknet.cfg at batch 1 on 2 cores and 2 threads: 11.4 ms
per forward with decoding beside it, 6.6 ms without). Then ``load`` runs inline, as darknet does. The items themselves are drawn in the thread
too, so a ``sys.stdin`` reader (darknet's "Enter Image Path:" loop) is read ahead as well.
A failed ``load`` does not stop the stream: its exception is handed over in place of the result,
for the caller to skip, count and report.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()


class Loaded(Generic[T, R]):
    """One item and what ``load`` made of it: ``value``, or the ``error`` it raised."""

    __slots__ = ("item", "value", "error")

    def __init__(self, item: T, value: R | None, error: BaseException | None) -> None:
        self.item, self.value, self.error = item, value, error


def spare_core() -> bool:
    """Whether a core is left over by torch's intra-op threads (for a thread decoding ahead)."""
    import torch

    from cnnlab.threads import cpus_available

    return torch.get_num_threads() < cpus_available()


def prefetch(items: Iterable[T], load: Callable[[T], R], depth: int = 4,
             errors: tuple[type[BaseException], ...] = (Exception,), ahead: bool | None = None) -> Iterator[Loaded[T, R]]:  # fmt: skip
    """``Loaded(item, load(item))`` for every item, in order, with up to ``depth`` loaded ahead.

    Exceptions of the ``errors`` types become ``Loaded.error``; any other exception (or one raised
    while drawing the items) is re-raised in the caller's thread. ``ahead`` (default: whether there
    is a :func:`spare_core`) chooses the background thread over loading each item when it is asked for."""
    if not (spare_core() if ahead is None else ahead):
        return _inline(items, load, errors)
    return _background(items, load, depth, errors)


def _inline(items: Iterable[T], load: Callable[[T], R], errors: tuple[type[BaseException], ...]) -> Iterator[Loaded[T, R]]:
    for item in items:
        try:
            got = Loaded(item, load(item), None)
        except errors as e:
            got = Loaded(item, None, e)
        yield got


def _background(items: Iterable[T], load: Callable[[T], R], depth: int,
                errors: tuple[type[BaseException], ...]) -> Iterator[Loaded[T, R]]:  # fmt: skip
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                try:
                    got = Loaded(item, load(item), None)
                except errors as e:
                    got = Loaded(item, None, e)
                _put(q, got, stop)
        except BaseException as e:  # handed to the consumer, which re-raises it
            _put(q, e, stop)
        _put(q, _END, stop)

    thread = threading.Thread(target=produce, name="cnnlab-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            got = q.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()  # the consumer stopped early (break, error): let the producer end


def _put(q: queue.Queue, value: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(value, timeout=0.1)
            return
        except queue.Full:
            continue


def batched(stream: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    batch: list[T] = []
    for x in stream:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
