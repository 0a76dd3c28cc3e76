"""The one owner of everything a run prints or writes about itself: console lines, progress,
``metrics.jsonl``, TensorBoard scalars and the plots. The training loop only reports numbers to it.

Rank-aware: only rank 0 prints or writes; on the other ranks every method does nothing, so the loop
needs no ``if rank == 0``. Progress is a one-line bar on a terminal, and a plain line every few
seconds when the output is a file or a pipe (``make demo > log`` gets lines, not ``\\r`` updates).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from cnnlab.engine.rundir import append_jsonl, plot_curves

PLAIN_EVERY = 10.0  # seconds between progress lines when the output is not a terminal


class Progress:
    """A counter shown as a tqdm bar on a terminal, or as a plain line every ``PLAIN_EVERY`` seconds."""

    def __init__(self, desc: str, total: int, initial: int, unit: str, stream: TextIO, enabled: bool) -> None:
        self.desc, self.total, self.n, self.unit, self.stream = desc, total, initial, unit, stream
        self.enabled = enabled
        self._bar = None
        self._t0 = self._last = time.monotonic()
        self._n0 = initial
        if enabled and _is_terminal(stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, dynamic_ncols=True, leave=False)

    def update(self, n: int) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last >= PLAIN_EVERY:
            self._last = time.monotonic()
            rate = (self.n - self._n0) / max(self._last - self._t0, 1e-9)
            print(f"{self.desc}  {self.n}/{self.total} {self.unit}  {rate:.0f} {self.unit}/s", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class RunLogger:
    """Console, progress, ``metrics.jsonl``, TensorBoard and plots of one run (rank 0 only)."""

    def __init__(
        self, run_dir: Path | None, *, main: bool = True, progress: bool = True, log_every: int = 20,
        out: TextIO | None = None, err: TextIO | None = None, tensorboard: bool = True,
    ) -> None:  # fmt: skip
        self.run_dir, self.main, self.show_progress = run_dir, main, progress
        self.log_every = max(1, log_every)
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self._tb = _tensorboard(run_dir) if (main and tensorboard and run_dir is not None) else None

    def info(self, message: str) -> None:
        """A line on the console (standard output)."""
        if self.main:
            print(message, file=self.out, flush=True)

    def warn(self, message: str) -> None:
        if self.main:
            print(message, file=self.err, flush=True)

    def progress(self, desc: str, total: int, initial: int = 0, unit: str = "img") -> Progress:
        return Progress(desc, total, initial, unit, self.err, self.main and self.show_progress)

    def step(self, step: int, losses: dict[str, float], lr: float) -> None:
        """Scalars of an optimizer step (every ``log_every`` steps): each loss term and the rate."""
        if self._tb is None or step % self.log_every:
            return
        for name, value in losses.items():
            self._tb.add_scalar(f"train/{name}", value, step)
        self._tb.add_scalar("train/lr", lr, step)

    def epoch(self, record: dict, line: str) -> None:
        """One epoch's figures: a JSON line in ``metrics.jsonl``, TensorBoard scalars, a console line."""
        if not self.main:
            return
        if self.run_dir is not None:
            append_jsonl(self.run_dir / "metrics.jsonl", record)
        if self._tb is not None:
            for key, value in record.items():
                if key.startswith(("train_", "val_")) and isinstance(value, (int, float)):
                    self._tb.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
        self.info(line)

    def curves(self, records: list[dict]) -> None:
        if self.main and self.run_dir is not None:
            plot_curves(records, self.run_dir / "curves.png")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but keep training if it is broken
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))
