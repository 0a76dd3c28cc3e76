"""What ``cnnlab darknet classifier train`` prints, in darknet's words, and its ``.weights`` backups.

:class:`DarknetLog` is the engine's :class:`~cnnlab.engine.logger.RunLogger` (console only: no run
folder) speaking darknet: the opening lines, a ``Loaded:`` line and a progress line per update
(``batch, epoch: loss, avg avg, rate rate, seconds, images`` and, for AlexeyAB, the hours left), the
``-topk`` accuracy, ``Saving weights to``, and the unreadable images. :class:`BackupWriter` writes the
files a :class:`~cnnlab.darknet.train.BackupPlan` lists after each update.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from cnnlab.darknet.model import DarknetNet
from cnnlab.engine.logger import RunLogger

if TYPE_CHECKING:
    from cnnlab.darknet.training import BackupPlan


class DarknetLog(RunLogger):
    def __init__(self, flavor: str, out: TextIO, err: TextIO) -> None:
        super().__init__(None, progress=False, out=out, err=err, tensorboard=False)
        self.flavor = flavor
        self.avg_loss = -1.0
        self.warned: set[str] = set()  # unreadable images already reported
        self.t0 = time.perf_counter()

    def opening(self, base: str, layer_table: str) -> None:
        self.info(base)
        self.info("1")  # darknet prints its GPU count
        self.warn(layer_table)

    def loading(self, weights: str) -> None:
        print(f"Loading weights from {weights}...", end="", file=self.err, flush=True)

    def hyper(self, rate: float, momentum: float, decay: float, images: int) -> None:
        self.info(f"Learning Rate: {rate:g}, Momentum: {momentum:g}, Decay: {decay:g}")
        self.info(str(images))

    def mark(self) -> None:
        """The next update's clock starts now (after this update's evaluation and backups)."""
        self.t0 = time.perf_counter()

    def update(self, batch_num: int, seen: int, n: int, loss_sum: float, images: int, rate: float, max_batches: int, loaded: float) -> None:
        """An update's two lines; ``loss_sum`` is the summed loss of its ``images``, ``loaded`` the
        seconds its batches took to load (the rest of the time since the last update is training)."""
        seconds = time.perf_counter() - self.t0 - loaded
        self.info(f"Loaded: {loaded:f} seconds")
        loss = loss_sum / images
        self.avg_loss = loss if self.avg_loss == -1 else self.avg_loss
        self.avg_loss = self.avg_loss * 0.9 + loss * 0.1
        line = (
            f"{batch_num}, {np.float32(seen) / np.float32(n):.3f}: {loss:f}, {self.avg_loss:f} avg, "
            f"{rate:f} rate, {seconds:f} seconds, {seen} images"
        )
        if self.flavor == "alexeyab":
            line += f", {(max_batches - batch_num) * seconds / 3600:f} hours left"
        self.info(line)

    def detector_update(self, batch_num: int, loss_sum: float, images: int, rate: float, max_batches: int, loaded: float) -> None:
        """``train_detector``'s lines for an update (its loss is the summed cost over the update's images)."""
        seconds = time.perf_counter() - self.t0 - loaded
        self.info(f"Loaded: {loaded:f} seconds")
        loss = loss_sum / images
        self.avg_loss = loss if self.avg_loss == -1 else self.avg_loss
        self.avg_loss = self.avg_loss * 0.9 + loss * 0.1
        if self.flavor == "alexeyab":
            hours = (max_batches - batch_num) * (seconds + loaded) / 3600
            self.info(f"\n {batch_num}: {loss:f}, {self.avg_loss:f} avg loss, {rate:f} rate, {seconds:f} seconds, {batch_num * images} images, {hours:f} hours left")
        else:
            self.info(f"{batch_num}: {loss:f}, {self.avg_loss:f} avg, {rate:f} rate, {seconds:f} seconds, {batch_num * images} images")

    def detection_layers(self, lines: list[str]) -> None:
        """The per-layer statistics darknet prints for each [yolo]/[region] layer of a micro-batch."""
        for line in lines:
            self.info(line)

    def topk(self, line: str) -> None:
        self.info(line)

    def bad_images(self, reasons: list[str]) -> None:
        """Each unreadable image once, when it is first met."""
        for reason in reasons:
            if reason not in self.warned:
                self.warned.add(reason)
                self.warn(f"warning: skipping {reason}")

    def skipped(self, paths: list[str]) -> None:
        if paths:
            self.warn(f"skipped {len(paths)} unreadable image(s): {', '.join(sorted(paths))}")


class BackupWriter:
    """darknet's backups: after update ``b`` the files the plan lists for ``b``; the final file at the end."""

    def __init__(self, model: DarknetNet, plan: "BackupPlan", log: DarknetLog) -> None:
        self.model, self.plan, self.log = model, plan, log

    def after_update(self, batch_num: int) -> None:
        for path in self.plan.saves.get(batch_num, []):
            self.save(path)

    def final(self) -> Path:
        self.save(self.plan.final)
        return self.plan.final

    def save(self, path: Path) -> None:
        self.log.warn(f"Saving weights to {path}")
        self.model.save_weights(path)  # atomic: temp file + rename
