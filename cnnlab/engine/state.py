"""The run's position and running figures: everything about where a run is that is not in a module's
``state_dict``. Shared figures (step, epoch) are the same on every rank; the running sums and bad
images are each rank's own, so the checkpoint keeps one :class:`RankState` per rank."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cnnlab.engine import checkpoint as ckpt_mod


@dataclass
class TrainState:
    epoch: int = 0  # current epoch (0-based)
    samples_drawn: int = 0  # samples of this rank's share of the epoch already consumed (resume point)
    step: int = 0  # optimizer steps so far
    micro_step: int = 0  # micro-batches so far (accumulation)
    loss_sum: float = 0.0  # this epoch's running train loss × images (this rank)
    seen: int = 0  # this epoch's train images (this rank)
    sums: dict[str, float] = field(default_factory=dict)  # the task's running tallies (this rank)
    train_seconds: float = 0.0  # all epochs
    train_images: int = 0  # all epochs, all ranks
    best: float = -float("inf")  # best value of the task's primary figure
    best_epoch: int = -1
    bad: list[str] = field(default_factory=list)  # unreadable samples of finished epochs (all ranks)

    def start_epoch(self) -> None:
        self.samples_drawn, self.loss_sum, self.seen, self.sums = 0, 0.0, 0, {}

    def add(self, loss: float, n: int, tally: dict[str, float]) -> None:
        self.loss_sum += loss * n
        self.seen += n
        for key, value in tally.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def shared(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, d: dict[str, Any]) -> "TrainState":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "best_top1" in d and "best" not in d:  # checkpoints written before tasks existed
            known["best"], known["best_epoch"] = d["best_top1"], d.get("best_epoch", -1)
        return cls(**known)


@dataclass
class RankState:
    """One rank's own part of a checkpoint: its RNG streams, running sums and this epoch's bad images."""

    rng: dict
    loss_sum: float
    seen: int
    sums: dict[str, float]
    bad: list[str]  # "path: reason" seen so far this epoch
    bad_seen: int  # samples this rank drew so far this epoch (good and bad)

    @classmethod
    def capture(cls, state: TrainState, bad: list[str], bad_seen: int) -> "RankState":
        return cls(ckpt_mod.rng_state(), state.loss_sum, state.seen, dict(state.sums), list(bad), bad_seen)

    def restore(self, state: TrainState) -> None:
        ckpt_mod.set_rng_state(self.rng)
        state.loss_sum, state.seen, state.sums = self.loss_sum, self.seen, dict(self.sums)
