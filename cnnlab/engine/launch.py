"""``cnnlab train --nproc N``: the same command under PyTorch's own launcher (``torchrun``) on this machine.

It calls ``torch.distributed.run`` in-process with ``--standalone`` (a local rendezvous), the
worker command being this very ``cnnlab train`` without ``--nproc``. Each rank prints its own error
line (prefixed ``rank N:``); what torchrun itself would print on a failure — its log lines and the
error dump — is replaced by one line per failed rank.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from cnnlab.errors import CnnlabError

LAUNCHER_FLAGS = {"--nproc": 1, "--max-restarts": 1}  # flags of the launcher, not of the workers (and their arity)


def worker_argv(argv: list[str]) -> list[str]:
    """``argv`` of ``cnnlab train`` without the launcher's own flags."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCHER_FLAGS:
            skip = 0 if "=" in arg else LAUNCHER_FLAGS[name]
            continue
        out.append(arg)
    return out


def launch(nproc: int, argv: list[str], max_restarts: int = 0) -> int:
    """Run ``cnnlab train ARGV`` as ``nproc`` processes; returns the exit code for the shell."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if nproc < 1:
        raise CnnlabError(f"--nproc {nproc}: give at least 1 process")
    _share_cores(nproc)
    for name in list(logging.root.manager.loggerDict):  # torchrun's modules log through their own loggers
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}", "-m", "cnnlab", "train", *worker_argv(argv)]
    )
    try:
        run(args)
    except ChildFailedError as e:
        for rank, failure in sorted(e.failures.items()):
            print(f"cnnlab train: rank {rank} of {nproc} {_how(failure.exitcode)}", file=sys.stderr)
        code = next(iter(e.failures.values())).exitcode
        return code if code > 0 else 128 - code
    return 0


def _share_cores(nproc: int) -> None:
    """Each rank gets cores / nproc threads (torchrun alone would give it one, with a warning), unless
    the user chose: their OMP_NUM_THREADS is inherited, their ``--threads N`` is in every rank's argv."""
    from cnnlab import threads

    decided = threads.current() or threads.decide(os.environ, threads.cpus_available())
    per_rank = threads.for_ranks(nproc, decided)
    if per_rank is not None:
        os.environ["OMP_NUM_THREADS"] = str(per_rank)
        print(f"{nproc} processes x {per_rank} thread(s) on {decided.cpus} cores")  # beside the global batch line


def _how(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode} (its own message is above)"
