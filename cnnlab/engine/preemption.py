"""SIGTERM (a scheduler's preemption, ``kill``, torchrun stopping its workers) as a clean stop: the run
finishes its current optimizer step, every rank agrees on stopping at the same step, a checkpoint is
written, and the process exits with one line saying how to continue."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

from cnnlab.engine.state import TrainState
from cnnlab.errors import CnnlabError


class Preempted(CnnlabError):
    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process stopped by it


class Preemption:
    """Context manager: while active, SIGTERM sets :attr:`requested` instead of killing the process."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "Preemption":
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def stopped(self, state: TrainState, run_dir: Path) -> Preempted:
        return Preempted(
            f"stopped by SIGTERM after optimizer step {state.step} (epoch {state.epoch + 1}); the checkpoint is saved: "
            f"continue with `cnnlab train --resume {run_dir}`"
        )
