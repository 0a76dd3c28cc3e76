"""``train(cfg)``: a run from its config, on one process or many (torchrun), for any task.

The parts, in the order a run meets them (a new contributor reads these first):
``build`` makes the data, model, optimizer and schedule; ``task`` says what a target, a loss and an
evaluation are; ``loop`` runs the step and the epoch; ``evaluate`` one validation pass;
``checkpoint`` saves and restores (``rundir`` the folder, ``state`` the position); ``logger`` owns
everything printed or written; ``distributed`` is torch.distributed under torchrun. This module only
composes them: :func:`train` (set up, then :func:`fit`), one epoch's bookkeeping, and the summary.

Exact resume: ``last.pt`` holds the model, optimizer, scheduler, EMA, scaler, epoch, step, each rank's
RNG states, running sums and bad images, and the samples already drawn this epoch; the sampler and
the per-sample augmentation seeds are functions of (seed, epoch, index), so a resumed run replays
the remaining batches bit for bit (at the same number of processes).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cnnlab.config import TrainConfig
from cnnlab.data.loader import BadImageLog
from cnnlab.engine import checkpoint as ckpt_mod, distributed
from cnnlab.engine.build import (
    Data, build_optimization, build_preprocess, inherited_preprocess_line, load_data, load_sources, prepare_for_training,
    seed_everything, steps_per_epoch,
)  # fmt: skip
from cnnlab.engine.autobatch import settle_batch
from cnnlab.engine.device import amp_dtype, is_out_of_memory, pick_device
from cnnlab.engine.distributed import Dist
from cnnlab.engine.evaluate import evaluate
from cnnlab.engine.finetune import Finetune
from cnnlab.engine.logger import RunLogger
from cnnlab.engine.loop import NonFiniteLoss, Trainer, train_one_epoch  # noqa: F401  (NonFiniteLoss: public)
from cnnlab.engine.preemption import Preemption
from cnnlab.engine.rundir import RunDir, check_out, discard_unstarted, mark_started, open_run, read_jsonl, release_runs, write_json
from cnnlab.engine.state import RankState, TrainState
from cnnlab.engine.train_checkpoint import CheckpointWriter, check_resume, record_resume_changes, restore
from cnnlab.engine.task import Report, Task, build_task
from cnnlab.errors import CnnlabError
from cnnlab.model_meta import Preprocess
from cnnlab.models.layers import unwrap


@dataclass
class Run:
    """Everything :func:`fit` works with, built once by :func:`setup`."""

    cfg: TrainConfig
    dist: Dist
    data: Data
    run: RunDir
    trainer: Trainer
    train_loader: object
    val_loader: object
    state: TrainState
    logger: RunLogger
    writer: CheckpointWriter
    images_per_epoch: int  # this rank's samples per epoch
    resumed: RankState | None = None  # this rank's part of the checkpoint a mid-epoch resume starts from
    finetune: Finetune | None = None  # frozen stages and when they start to train


def _start_weights(model: torch.nn.Module, cfg: TrainConfig, classes: list[str]) -> tuple[list[str], Preprocess | None]:
    """--init / --finetune; an embedding's outputs name no class, and its width is --embedding-dim."""
    if cfg.task != "embedding":
        return ckpt_mod.start_weights(model, cfg.init, cfg.finetune, list(classes))
    try:
        return ckpt_mod.start_weights(model, cfg.init, cfg.finetune, None)
    except ckpt_mod.ClassCountMismatch as e:
        raise CnnlabError(f"{cfg.init or cfg.finetune} gives {e.trained}-wide embeddings and this run's --embedding-dim is "
                          f"{cfg.embedding_dim}: pass --embedding-dim {e.trained} to start from all of it, or --finetune "
                          "for a new embedding layer") from None  # fmt: skip


def train(cfg: TrainConfig, resume: str | None = None) -> dict | None:
    """Run (or resume) a training run; returns the summary written to ``summary.json`` (None on the
    processes of a distributed run other than rank 0)."""
    if cfg.accum_steps < 1 or (cfg.batch_size != "auto" and cfg.batch_size < 1) or cfg.epochs < 1:
        raise CnnlabError("epochs, batch_size and accum_steps must be at least 1")
    if cfg.out and not resume and not os.environ.get("TORCHELASTIC_RESTART_COUNT", "0").strip("0"):
        check_out(cfg.out)  # a wrong --out is said at once, not after the data and model are built
    dist, device = distributed.setup(pick_device(cfg.device))
    try:
        r = setup_or_discard(cfg, resume, dist, device)
        with Preemption() as preempt, out_of_memory_explained(r.cfg):
            try:
                report = fit(r, preempt)
            finally:
                r.logger.close()
        summary = finish(r, report)
        return summary if dist.is_main else None
    finally:
        release_runs()
        distributed.teardown()


@contextlib.contextmanager
def out_of_memory_explained(cfg: TrainConfig) -> Iterator[None]:
    """A step that runs out of memory (CUDA, or a CPU allocation that fails) ends in one line naming the
    batch size and how to keep the same global batch in smaller pieces (darknet's subdivisions=)."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        half = max(1, cfg.batch_size // 2)
        raise CnnlabError(
            f"out of memory with --batch-size {cfg.batch_size} per process ({type(e).__name__}); keep the global "
            f"batch in smaller pieces with --batch-size {half} --accum-steps {cfg.accum_steps * cfg.batch_size // half} "
            "(gradient accumulation: darknet's subdivisions=), or use a smaller --model input"
        ) from None


def setup_or_discard(cfg: TrainConfig, resume: str | None, dist: Dist, device: torch.device) -> Run:
    """:func:`setup`; a run that fails before it begins (a flag out of range, weights that do not
    fit) leaves no folder behind to block the same ``--out`` next time."""
    try:
        r = setup(cfg, resume, dist, device)
    except BaseException:
        discard_unstarted()
        raise
    mark_started()
    return r


def setup(cfg: TrainConfig, resume: str | None, dist: Dist, device: torch.device) -> Run:
    seed_everything(cfg.seed)
    amp = amp_dtype(cfg.amp, device)
    data = load_sources(cfg)
    cfg, batch_line = settle_batch(cfg, data, dist.world, device, amp, bool(resume))  # --batch-size auto, --global-batch
    run = open_run(cfg, resume, dist)
    task = build_task(cfg.task, cfg, data.train, device)
    ckpt = ckpt_mod.load(run.last, map_location=device) if run.resuming else None
    resumed_with = ""
    if ckpt is not None:
        check_resume(ckpt, cfg, data.classes, run.path)
        resumed_with = record_resume_changes(ckpt, cfg, run.path, dist)
    # A resumed run rebuilds the network its checkpoint describes (a darknet cfg's text travels in it).
    model = ckpt_mod.build_model(ckpt["arch"]) if ckpt else task.build_model(cfg.model, cfg.model_kwargs)
    task.check_model(model)
    notes = [*data.notes, resumed_with]
    if ckpt is None:
        started, trained_with = _start_weights(model, cfg, data.classes)
        pre = build_preprocess(model, cfg.preprocess, trained_with)
        notes += started + [inherited_preprocess_line(model, pre, trained_with, cfg.init or cfg.finetune)]
    else:  # the preprocessing the run started with (a checkpoint it started from may have set it)
        pre = Preprocess.from_dict(ckpt["preprocess"]) if ckpt.get("preprocess") else build_preprocess(model, cfg.preprocess)
    tuning = Finetune.from_config(model, cfg)
    notes.append(tuning.freeze(model))
    normalize = prepare_for_training(model, pre, cfg, device, amp)
    train_loader, val_loader = load_data(cfg, data, pre, dist, pin=device.type == "cuda", task=task, model=model)
    spe = steps_per_epoch(len(train_loader), cfg, len(data.train), dist.world)
    optimizer, scheduler = build_optimization(model, cfg, spe)
    if tuning.unfrozen_by(ckpt["train_state"]["epoch"] if ckpt else 0):  # the optimizer as the run had it when it saved
        notes.append(tuning.unfreeze(model, optimizer, scheduler, cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) if cfg.ema_decay > 0 else None
    if dist.rank > 0:  # rank 0 keeps the one-process stream; the others draw their own dropout masks
        torch.manual_seed(cfg.seed + 7919 * dist.rank)
    forward = wrap_for_training(model, cfg, device)
    trainer = Trainer(forward, task, normalize, optimizer, scheduler, scaler, ema, device, amp, cfg.accum_steps, cfg.clip_grad, cfg.seed,
                      input_size=pre.input_size)  # fmt: skip
    logger = RunLogger(run.path, main=dist.is_main, progress=cfg.progress, log_every=cfg.log_every)
    writer = CheckpointWriter(run.path / "checkpoints", dist, cfg, data.classes, pre)
    state, resumed = TrainState(), None
    if ckpt is not None:
        state, resumed = restore(ckpt, trainer, dist, spe, logger, run.path, len(data.train))
    if batch_line:
        logger.info(batch_line)
    logger.info(_opening_line(cfg, data, dist, device, amp))
    for line in filter(None, notes):
        logger.info(line)
    per_epoch = len(train_loader) * cfg.batch_size
    return Run(cfg, dist, data, run, trainer, train_loader, val_loader, state, logger, writer, per_epoch, resumed, tuning)


def wrap_for_training(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """DDP (several processes) and torch.compile around the model; redone when frozen stages start to
    train, because DDP only all-reduces the parameters that needed a gradient when it was made."""
    forward = distributed.wrap(model, device, cfg.sync_bn)
    return torch.compile(forward) if cfg.compile else forward


def unfreeze_if_due(r: Run) -> None:
    """At an epoch boundary, before the checkpoint: from ``--unfreeze-at`` on every stage trains."""
    t, model = r.trainer, unwrap(r.trainer.model)
    if r.finetune is None or not r.finetune.unfrozen_by(r.state.epoch) or not model.frozen:
        return
    r.logger.info(r.finetune.unfreeze(model, t.optimizer, t.scheduler, r.cfg))
    t.model = wrap_for_training(model, r.cfg, t.device)


def _opening_line(cfg: TrainConfig, data: Data, dist: Dist, device: torch.device, amp: torch.dtype | None) -> str:
    glob = dist.world * cfg.batch_size * cfg.accum_steps
    procs = f"{dist.world} process{'es' if dist.world > 1 else ''}"
    precision = str(amp).replace("torch.", "") if amp else "fp32"
    return (
        f"{cfg.task} {cfg.model} on {cfg.data}: {len(data.train)} training / {len(data.val)} held-out images, "
        f"{len(data.classes)} classes; global batch {glob} = {procs} x {cfg.batch_size} x {cfg.accum_steps} accumulation; "
        f"{device}, {precision}"
    )


def fit(r: Run, preempt: Preemption) -> Report | None:
    """Epochs until ``cfg.epochs``; returns the last epoch's report (None when there was none left)."""
    report = None
    while r.state.epoch < r.cfg.epochs:
        report = run_epoch(r, preempt)
    return report


def run_epoch(r: Run, preempt: Preemption) -> Report:
    cfg, state, t = r.cfg, r.state, r.trainer
    r.train_loader.sampler.set_epoch(state.epoch, start=state.samples_drawn)
    bad_log = BadImageLog(cfg.max_bad_fraction)
    if state.samples_drawn and r.resumed is not None:  # the bad images this epoch met before the stop
        bad_log.restore(r.resumed.bad, r.resumed.bad_seen)
    progress = r.logger.progress(f"epoch {state.epoch + 1}/{cfg.epochs}", r.images_per_epoch, state.samples_drawn)

    def after_step(st: TrainState, losses: dict[str, float]) -> None:
        r.logger.step(st.step, losses, t.lr)
        bad, seen, stop = distributed.sum_floats([len(bad_log.bad), bad_log.seen, float(preempt.requested)], t.device)
        bad_log.check(totals=(int(bad), int(seen)))
        mid_epoch = st.samples_drawn < r.images_per_epoch
        if stop:
            r.writer.save(r.trainer, st, bad_log)
            raise preempt.stopped(st, r.run.path)
        if cfg.ckpt_every and st.step % cfg.ckpt_every == 0 and mid_epoch:
            r.writer.save(r.trainer, st, bad_log)

    t0 = time.perf_counter()
    images_before = state.seen
    train_one_epoch(t, r.train_loader, state, bad_log, after_step, progress)
    progress.close()
    check_dropped_tail(r.train_loader, state.epoch, bad_log)
    return end_epoch(r, bad_log, time.perf_counter() - t0, images_before)


def check_dropped_tail(loader, epoch: int, bad_log: BadImageLog) -> None:
    """The last partial batch is dropped (every step a full batch, equal steps on every rank), so its
    samples are never trained on; read them anyway so that a bad one among them is counted and reported."""
    order = loader.sampler.indices()
    tail = order[len(order) // loader.batch_size * loader.batch_size :]
    for index in tail:
        image, reason, _ = loader.dataset[(epoch, index)]
        bad_log.seen += 1
        if image is None:
            bad_log.bad[reason] = None


def end_epoch(r: Run, bad_log: BadImageLog, seconds: float, images_before: int) -> Report:
    """Reduce the epoch's figures over ranks, evaluate, log, checkpoint."""
    cfg, state, t, dist = r.cfg, r.state, r.trainer, r.dist
    ranks = distributed.gather_objects((state.loss_sum, state.seen, state.sums, state.seen - images_before, list(bad_log.bad), bad_log.seen))
    loss_sum, seen, new_images = sum(x[0] for x in ranks), sum(x[1] for x in ranks), sum(x[3] for x in ranks)
    sums = {k: sum(x[2].get(k, 0.0) for x in ranks) for k in ranks[0][2]}
    train_bad = [b for x in ranks for b in x[4]]
    bad_log.check(min_seen=0, totals=(len(train_bad), sum(x[5] for x in ranks)))
    state.train_seconds += seconds
    state.train_images += new_images
    if dist.enabled and not cfg.sync_bn:
        distributed.average_buffers(unwrap(t.model), t.device)  # timm's --dist-bn reduce
    report, val_bad = validate(r)
    state.bad = sorted(set(state.bad) | set(train_bad) | set(val_bad))
    record = {"epoch": state.epoch + 1, "step": state.step, "lr": t.lr, "train_loss": loss_sum / max(1, seen)}
    record |= t.task.train_record(sums, seen) | report.record()
    record |= {"epoch_seconds": seconds, "images_per_second": new_images / max(seconds, 1e-9)}
    r.logger.epoch(record, _epoch_line(r, record, report))
    if not math.isfinite(record.get("val_loss", 0.0)):  # training's own loss was finite, or the step would have stopped
        r.logger.warn(f"warning: the held-out loss is {record['val_loss']}: the network's outputs on held-out images are not finite "
                      "(EMA or BatchNorm statistics gone bad?); lower --lr, set --clip-grad, or check the data")  # fmt: skip
    is_best = report.primary > state.best
    if is_best:
        state.best, state.best_epoch = report.primary, state.epoch + 1
    state.epoch += 1
    state.start_epoch()
    unfreeze_if_due(r)
    r.writer.save(t, state, None, best=is_best)
    return report


def _epoch_line(r: Run, record: dict, report: Report) -> str:
    train = " ".join(filter(None, [f"train loss {record['train_loss']:.4f}", r.trainer.task.train_line(record)]))
    return f"epoch {record['epoch']}/{r.cfg.epochs}  {train}  {report.line()}  {record['images_per_second']:.0f} img/s"


def validate(r: Run) -> tuple[Report, list[str]]:
    """One pass over the held-out split (EMA weights when kept), every rank its share; the bad images of all ranks."""
    t = r.trainer
    model = t.ema.module if t.ema is not None else unwrap(t.model)
    val_bad = BadImageLog(r.cfg.max_bad_fraction)
    progress = r.logger.progress("valid", len(r.val_loader), unit="img")
    report = evaluate(model, r.val_loader, t.normalize, t.task.evaluator(), t.device, t.amp, val_bad, progress)
    ranks = distributed.gather_objects((list(val_bad.bad), val_bad.seen))
    bad = [b for x in ranks for b in x[0]]
    val_bad.check(min_seen=0, totals=(len(bad), sum(x[1] for x in ranks)))
    return report, bad


def finish(r: Run, report: Report | None) -> dict:
    """The final report (re-evaluated when a finished run was resumed), ``summary.json``, ``valid.json``, plots."""
    if report is None:
        report, _ = validate(r)
    r.writer.finish_task_state(r.trainer, r.state, r.train_loader)
    cfg, state = r.cfg, r.state
    summary = {"task": cfg.task, "model": cfg.model, "data": cfg.data, "headline": report.headline()} | report.summary() | {
        "epochs": cfg.epochs,
        "best": state.best,
        "best_epoch": state.best_epoch,
        "train_seconds": state.train_seconds,
        "images_per_second": state.train_images / max(state.train_seconds, 1e-9),
        "train_images": len(r.data.train),
        "val_images": len(r.data.val),
        "bad_images": state.bad,
        "world_size": r.dist.world,
        "global_batch": r.dist.world * cfg.batch_size * cfg.accum_steps,
        "device": str(r.trainer.device),
        "amp": str(r.trainer.amp).replace("torch.", "") if r.trainer.amp else "off",
        "run_dir": str(r.run.path),
    }
    if "top1" in summary:
        summary["best_top1"] = state.best  # the name summaries had before tasks existed
    if r.dist.is_main:
        write_json(r.run.path / "summary.json", summary)
        write_json(r.run.path / "valid.json", report.to_dict())
        r.logger.curves(read_jsonl(r.run.path / "metrics.jsonl"))
        report.figures(r.run.path)
    distributed.barrier()
    return summary


__all__ = ["train", "setup", "fit", "run_epoch", "end_epoch", "validate", "finish", "Run", "Task"]
