"""How many threads cnnlab computes with, and how its OpenMP threads wait: decided before torch loads.

PyTorch's CPU kernels run on GNU OpenMP (libgomp, bundled with the wheel; ``torch.__config__.
parallel_info()`` says "ATen parallel backend: OpenMP"). At the end of every parallel region libgomp
keeps the finished threads spinning (``GOMP_SPINCOUNT``, 300,000 by default when there are no more
threads than cores) so the next region starts without a wake-up. On an idle machine that is free.
On a busy one it is a disaster: when another process holds one of the cores, the thread that runs
on the other core spins at every barrier waiting for its descheduled sibling, burning the time
slice that sibling needs. A LeNet-5 step is many small parallel regions, so training fell
several-fold beside a single ``yes > /dev/null`` (issue 15: 465-498 images/s with 2 threads,
1,567-2,036 with one) and to ~25 images/s beside the test suite.

The policy:

- thread count: the user's ``--threads N``, else ``OMP_NUM_THREADS`` (set by the user, by torchrun,
  or by ``cnnlab train --nproc`` for its ranks), else every core this process may use (affinity mask
  and cgroup CPU quota), shared out between the local ranks of a torchrun job;
- waiting: ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep on a futex as soon as a region ends) unless
  the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``.

Measured on this 2-core machine (bench/RESULTS.md, "Threads on a busy machine"), with other
sessions keeping its load average at 5-11, so "alone" was never idle. bench/contention.py, 3 paired
rounds of ``cnnlab train`` on the demo recipe, then ResNet-18 predict, median images/s alone /
beside a ``yes``: training, these defaults 1,278 / 848, one thread 1,112 / 499, two threads spinning
(libgomp's default, cnnlab's before) 265 / 137; predict 8.4 / 7.6, 10.8 / 4.4, 2.6 / 1.2. An earlier
synthetic LeNet-5 step loop (load 8-10) put ``GOMP_SPINCOUNT=10000`` between spinning and sleeping
(alone / beside 1,936 / 1,088 against 3,565 / 2,752 sleeping). So: sleep, not spin, and keep every
core. Fewer threads when the load average is high at start was not adopted: it is a one-minute
average, it lags a competitor that starts with the run, and a run keeps the count it started with
while the load comes and goes.

Everything here only reads and writes environment variables until :func:`apply` sees torch already
imported (a library user, a test); then only ``--threads`` changes the count (through torch), and
the wait policy is whatever libgomp started with (it reads its environment once, when it loads).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

WAIT_POLICY = "PASSIVE"  # see the module docstring for why

_decision: "Decision | None" = None  # what apply() picked in this process (recorded in the run's config.yaml)


@dataclass(frozen=True)
class Decision:
    threads: int  # intra-op threads (OMP_NUM_THREADS / torch.set_num_threads)
    source: str  # "--threads", "OMP_NUM_THREADS" or "cores" (the policy's own choice)
    cpus: int  # cores this process may use
    wait_policy: str  # what idle OpenMP threads do: PASSIVE (sleep), or what the user set
    env: dict[str, str] = field(default_factory=dict)  # variables this decision sets

    def record(self) -> dict:
        """For the run's metadata."""
        return {k: v for k, v in asdict(self).items() if k != "env"}

    def line(self) -> str:
        return f"threads: {self.threads} of {self.cpus} cores ({self.source}), OpenMP wait policy {self.wait_policy}"


def cpus_available(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may run on: the affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    n = _affinity_cpus()
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _affinity_cpus() -> int:
    """The cores libgomp (and so torch) would use by itself."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _env_threads(env: Mapping[str, str]) -> int | None:
    """``OMP_NUM_THREADS``'s count (its first level for a nested list like ``4,2``); None if unset or unreadable."""
    value = env.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdecimal() and int(value) > 0 else None


def decide(env: Mapping[str, str], cpus: int, flag: int | None = None) -> Decision:
    """The thread count and wait policy for one process, from what the user set and the cores it has.

    ``env`` is the process environment; ranks launched without ``OMP_NUM_THREADS`` (torchrun sets it
    unless there is one rank per node) share ``cpus`` between ``LOCAL_WORLD_SIZE`` of them.
    """
    env_threads = _env_threads(env)
    if flag is not None:
        threads, source = max(1, flag), "--threads"
    elif env_threads is not None:
        threads, source = env_threads, "OMP_NUM_THREADS"
    else:
        local = env.get("LOCAL_WORLD_SIZE", "1")
        threads, source = max(1, cpus // max(1, int(local) if local.isdecimal() else 1)), "cores"
    out = {} if source == "OMP_NUM_THREADS" else {"OMP_NUM_THREADS": str(threads)}
    if "OMP_WAIT_POLICY" in env:
        wait = env["OMP_WAIT_POLICY"].upper()
    elif "GOMP_SPINCOUNT" in env:
        wait = f"GOMP_SPINCOUNT={env['GOMP_SPINCOUNT']}"
    else:
        wait = out["OMP_WAIT_POLICY"] = WAIT_POLICY
    return Decision(threads, source, cpus, wait, out)


def for_ranks(nproc: int, d: Decision) -> int | None:
    """Threads for each of ``nproc`` local ranks (``cnnlab train --nproc``): the cores shared out, or
    None when the user chose (``--threads`` or ``OMP_NUM_THREADS``; every rank then uses theirs)."""
    return max(1, d.cpus // max(1, nproc)) if d.source == "cores" else None


def apply(flag: int | None = None, announce: bool = True) -> Decision:
    """Decide for this process and set it up: the environment before torch loads, torch after."""
    global _decision
    d = decide(os.environ, cpus_available(), flag)
    # said only when the policy's own count differs from the cores torch would use (a container's CPU
    # quota), and only when it takes effect; under torchrun the launcher (cnnlab train --nproc) says it
    quota = d.source == "cores" and d.threads != _affinity_cpus() and "LOCAL_RANK" not in os.environ
    if "torch" in sys.modules:  # a library user or a test: libgomp has read its environment already
        import torch

        if d.source == "--threads":
            torch.set_num_threads(d.threads)
        # else the count is theirs (OMP_NUM_THREADS as torch read it, or their own set_num_threads)
        # the wait policy is the one an earlier call set before torch loaded, else whatever libgomp found
        wait = _decision.wait_policy if _decision is not None else "unchanged (torch was imported first)"
        d, quota = replace(d, threads=torch.get_num_threads(), wait_policy=wait, env={}), False
    else:
        os.environ.update(d.env)
    _decision = d
    if announce and quota:
        print(f"cnnlab: {d.line()}", file=sys.stderr)
    return d


def current() -> Decision | None:
    """What :func:`apply` decided in this process (None if it was never called)."""
    return _decision


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """The calling thread's torch ops inside run on one intra-op thread (OpenMP's thread count is per
    calling thread, so other threads keep theirs). For per-image work done in the main process
    (``workers: 0``): an image's transforms are many small ops, too small to share out, yet each may
    open a parallel region, and with sleeping threads each region is a wake-up. The demo recipe's
    batch of 64 took 28.7 ms to draw on two threads against 15.6 on one (17.2 inside this)."""
    with on_threads(1):
        yield


@contextlib.contextmanager
def on_threads(n: int | None) -> Iterator[None]:
    """The calling thread's torch ops inside run on ``n`` intra-op threads (None: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def worker_init(worker_id: int) -> None:
    """DataLoader worker start: one compute thread. The cores belong to the main process's network;
    a worker decodes and augments one image at a time, and N workers each running two OpenMP threads
    on a 2-core machine is exactly the oversubscription this module exists to avoid."""
    import torch

    torch.set_num_threads(1)  # torch's worker loop does this too; here it does not depend on torch's version
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(1)
