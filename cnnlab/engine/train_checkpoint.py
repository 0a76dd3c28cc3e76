"""A training run's checkpoint: what it holds, how every rank contributes to it, how a run restarts from it.

The model, optimizer, scheduler, scaler and EMA are the same on every rank; each rank's RNG streams,
running sums and this epoch's bad images are its own, so saving is collective: every rank hands its
:class:`~cnnlab.engine.state.RankState` to rank 0, rank 0 writes ``last.pt`` atomically, and all
wait for it (a barrier) before going on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from cnnlab import __version__, config as config_mod
from cnnlab.config import TrainConfig
from cnnlab.data.loader import BadImageLog
from cnnlab.engine import checkpoint as ckpt_mod, distributed
from cnnlab.engine.distributed import Dist
from cnnlab.engine.logger import RunLogger
from cnnlab.engine.loop import Trainer
from cnnlab.engine.rundir import keep_jsonl
from cnnlab.engine.state import RankState, TrainState
from cnnlab.errors import CnnlabError
from cnnlab.model_meta import Preprocess
from cnnlab.models.layers import unwrap


class CheckpointWriter:
    """Writes ``last.pt`` (and ``best.pt``) for the run; call :meth:`save` on every rank."""

    def __init__(self, folder: Path, dist: Dist, cfg: TrainConfig, classes: list[str], pre: Preprocess) -> None:
        self.folder, self.dist, self.cfg, self.classes, self.pre = folder, dist, cfg, classes, pre
        self.extra: dict = {}

    def save(self, t: Trainer, state: TrainState, bad_log: BadImageLog | None, best: bool = False) -> None:
        """Collective: every rank's :class:`RankState` goes in; rank 0 writes; everyone waits for the file."""
        mine = RankState.capture(state, list(bad_log.bad) if bad_log else [], bad_log.seen if bad_log else 0)
        ranks = distributed.gather_objects(dataclasses.asdict(mine))
        if self.dist.is_main:
            payload = self.payload(t, state, ranks)
            ckpt_mod.save_atomic(payload, self.folder / "last.pt")
            if best:
                ckpt_mod.save_atomic(payload, self.folder / "best.pt")
        distributed.barrier()

    def payload(self, t: Trainer, state: TrainState, ranks: list[dict]) -> dict:
        model = unwrap(t.model)
        return {
            "format": ckpt_mod.FORMAT,
            "task": t.task.name,
            "arch": ckpt_mod.arch_of(model, self.cfg.model_kwargs),
            "classes": self.classes,
            "preprocess": self.pre.to_dict(),
            "model": model.state_dict(),
            "ema": t.ema.module.state_dict() if t.ema is not None else None,
            "ema_n": int(t.ema.n_averaged) if t.ema is not None else 0,
            "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(),
            "scaler": t.scaler.state_dict(),
            "train_state": state.shared(),
            "world": self.dist.world,
            "ranks": ranks,
            "rng": ranks[0]["rng"],  # rank 0's, where readers of single-process checkpoints look
            "task_state": self.extra,
            "config": config_mod.to_dict(self.cfg),
            "cnnlab_version": __version__,
        }

    def finish_task_state(self, t: Trainer, state: TrainState, train_loader) -> None:
        """What the task keeps for later use (e.g. embedding class centres), saved into last.pt and best.pt."""
        self.extra = t.task.extra_state(unwrap(t.model) if t.ema is None else t.ema.module, train_loader)
        if self.extra:
            self.save(t, state, None)
            best = self.folder / "best.pt"
            if self.dist.is_main and best.is_file():
                ckpt = torch.load(best, map_location="cpu", weights_only=True)
                ckpt["task_state"] = self.extra
                ckpt_mod.save_atomic(ckpt, best)
            distributed.barrier()


def check_resume(ckpt: dict, cfg: TrainConfig, classes: list[str], run_dir: Path) -> None:
    """A resume continues the same run: refuse, naming what differs, another data set, task or model."""
    saved = ckpt.get("config") or {}
    task = ckpt.get("task", "classify")
    if task != cfg.task:
        raise CnnlabError(f"{run_dir} is a {task} run, not {cfg.task}; resume it without --task, or start a new run with --out")
    if saved.get("data", cfg.data) != cfg.data:
        raise CnnlabError(
            f"{run_dir} was trained on {saved['data']!r}, not {cfg.data!r}; resume without --data, "
            "or start a new run (--finetune RUN to carry the weights over)"
        )
    if list(ckpt["classes"]) != list(classes):
        what = f"{len(ckpt['classes'])} classes there, {len(classes)} here" if len(ckpt["classes"]) != len(classes) else "the class names differ"
        raise CnnlabError(
            f"{run_dir} was trained on {saved.get('data', 'other data')!r} and --data {cfg.data!r} is another data set ({what}); "
            "resume without --data, or start a new run (--finetune to carry the weights over)"
        )
    if saved.get("model", cfg.model) != cfg.model:
        raise CnnlabError(f"{run_dir} trains {saved['model']!r}, not {cfg.model!r}; resume without --model, or start a new run")


def resume_changes(saved: dict, cfg: TrainConfig) -> dict[str, tuple]:
    """Config keys whose value on the command line differs from the run's: key -> (then, now)."""
    now = config_mod.to_dict(cfg)
    return {k: (saved[k], v) for k, v in now.items() if k in saved and saved[k] != v}


def record_resume_changes(ckpt: dict, cfg: TrainConfig, run_dir: Path, dist: Dist) -> str:
    """The changes a resume makes (``--epochs``, how it runs, the batch split of another number of
    processes) go into the run's config.yaml, so the folder says what the run did; returns the line
    saying what changed ("" for none)."""
    from cnnlab.engine.rundir import save_config

    changes = resume_changes(ckpt.get("config") or {}, cfg)
    if not changes:
        return ""
    if dist.is_main:
        save_config(cfg, run_dir, dist.world)
    return "resumed with " + ", ".join(f"{k} {now!r} (was {then!r})" for k, (then, now) in changes.items())


def restore(ckpt: dict, t: Trainer, dist: Dist, spe: int, logger: RunLogger, run_dir: Path, n_train: int) -> tuple[TrainState, RankState | None]:
    """Load every piece of the checkpoint into the run; returns the state and this rank's own part
    (None when the world size changed: the run then restarts at the next epoch boundary)."""
    model = unwrap(t.model)
    model.load_state_dict(ckpt["model"])
    t.optimizer.load_state_dict(ckpt["optimizer"])
    t.scheduler.load_state_dict(ckpt["scheduler"])
    t.scaler.load_state_dict(ckpt["scaler"])
    if t.ema is not None and ckpt.get("ema") is not None:
        t.ema.module.load_state_dict(ckpt["ema"])
        t.ema.n_averaged.fill_(ckpt["ema_n"])
    state = TrainState.from_checkpoint(ckpt["train_state"])
    ranks = ckpt.get("ranks") or [{"rng": ckpt["rng"], "loss_sum": 0.0, "seen": 0, "sums": {}, "bad": [], "bad_seen": 0}]
    saved_world = int(ckpt.get("world", 1))
    mine = None
    if saved_world == dist.world:
        mine = RankState(**ranks[dist.rank])
        mine.restore(state)
    else:
        _restart_at_epoch_boundary(state, t, ranks, saved_world, dist, spe, logger)
    # A kill between logging an epoch and checkpointing it would log that epoch twice.
    if dist.is_main:
        keep_jsonl(run_dir / "metrics.jsonl", lambda rec: rec["epoch"] <= state.epoch)
    logger.info(f"resuming {run_dir} at epoch {state.epoch + 1}, sample {state.samples_drawn * dist.world} of {n_train}")
    return state, mine


def _restart_at_epoch_boundary(state: TrainState, t: Trainer, ranks: list[dict], saved_world: int, dist: Dist, spe: int, logger: RunLogger) -> None:
    """Another number of processes splits the data differently, so the cut epoch cannot be replayed:
    continue from the next epoch with the schedule placed at its start."""
    if state.samples_drawn:
        logger.info(
            f"the checkpoint was written by {saved_world} process(es), this run has {dist.world}: the rest of epoch "
            f"{state.epoch + 1} is skipped and training continues at the start of epoch {state.epoch + 2}"
        )
        state.epoch += 1
    state.start_epoch()
    ckpt_mod.set_rng_state(ranks[0]["rng"])
    if dist.rank > 0:
        torch.manual_seed(int(torch.initial_seed()) + 7919 * dist.rank)
    t.scheduler.last_epoch = state.epoch * spe - 1
    t.scheduler.step()  # the learning rate of the new epoch's first step
