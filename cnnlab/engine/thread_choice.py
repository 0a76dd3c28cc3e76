"""How many threads a one-image forward runs on: all of torch's, or one, whichever times faster here.

cnnlab's OpenMP threads sleep between parallel regions (:mod:`cnnlab.threads`: a busy machine
needs it), so every region of a forward wakes the others. On a network whose layers are quick —
bf16 on AMX, or a small net — the wake-ups cost more than the second core gives. Measured on the
Xeon of bench/RESULTS.md (prepared engine, batch 1, 3 ms between images as a command leaves them,
8 paired rounds): ResNet-18 bf16 5.37 ms on one thread against 6.62 on two, darknet.cfg bf16 3.03
against 3.24; in fp32 two threads win (15.5 against 24.1, 6.2 against 7.4). Which side wins depends
on the CPU, the net and the wait policy, so it is timed, at load, for commands that predict one image
at a time: the counts take turns forward by forward, and one thread is kept only when it is faster by
:data:`MARGIN`. The choice is cached with the kernel choices (:mod:`.kernel_cache`), keyed by the
machine, torch, the wait policy, the thread count, the input and the network's layer shapes, so runs
of one command agree; one timed while another process held a core favours one thread, and stays until
that file is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from cnnlab.engine.kernel_cache import Choices, machine
from cnnlab.threads import on_threads

ROUNDS = 5  # timed forwards per count, after one untimed each
MARGIN = 0.05  # one thread must be this much faster to be kept (the timings are noisy; all threads is the default)
PAUSE = 0.002  # seconds before each timed forward: a command decodes between images and its threads fall asleep
LONG = 0.25  # seconds; a forward this long keeps every thread untimed (wake-ups are microseconds a region)


def one_image_threads(run: Callable[[torch.Tensor], object], net: nn.Module, example: torch.Tensor) -> int:
    """The thread count to run ``run`` on for one image like ``example``: torch's, or 1."""
    threads = torch.get_num_threads()
    if threads == 1:
        return 1
    choices = Choices()
    key = choice_key(net, example, threads)
    cached = choices.get(key)
    if cached is not None and cached.isdecimal():
        return int(cached)
    try:
        count = faster_count(lambda n: _forward_seconds(run, example, n), threads)
    except RuntimeError:  # a net that cannot run one image (a fixed-batch reshape): the real call will say so
        return threads
    choices.add(key, str(count))
    choices.save()
    return count


def faster_count(seconds_at: Callable[[int], float], threads: int, rounds: int = ROUNDS) -> int:
    """``threads`` or 1, from :data:`ROUNDS` forwards at each taking turns (``seconds_at(n)``: one
    forward's seconds on ``n`` threads); the first forward at each count is not counted."""
    if seconds_at(threads) > LONG:
        return threads
    seconds_at(1)
    times: dict[int, list[float]] = {threads: [], 1: []}
    for r in range(rounds):
        for n in (threads, 1) if r % 2 == 0 else (1, threads):
            times[n].append(seconds_at(n))
    return 1 if statistics.median(times[1]) < (1 - MARGIN) * statistics.median(times[threads]) else threads


def _forward_seconds(run: Callable[[torch.Tensor], object], example: torch.Tensor, n: int) -> float:
    time.sleep(PAUSE)
    with on_threads(n), torch.inference_mode():
        start = time.perf_counter()
        run(example)
        return time.perf_counter() - start


def choice_key(net: nn.Module, example: torch.Tensor, threads: int) -> str:
    """What decides the timings: the machine, torch, how idle threads wait, the count, the input and
    the layers (their kinds and weight shapes, not their values)."""
    layers = [(type(m).__name__, [list(t.shape) for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))])
              for m in net.modules()]  # fmt: skip
    shape = hashlib.sha1(json.dumps(layers).encode()).hexdigest()[:16]
    wait = os.environ.get("OMP_WAIT_POLICY", "") + "/" + os.environ.get("GOMP_SPINCOUNT", "")
    return json.dumps([machine(), torch.__version__, "threads for one image", wait, threads, list(example.shape), str(example.dtype), shape])
