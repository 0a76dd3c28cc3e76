"""The training loop: ``train(cfg)`` builds everything from a :class:`TrainConfig`;
``train_one_epoch`` and :func:`~cnnlab.engine.evaluate.evaluate` are plain functions with
explicit arguments (torchvision's reference-script shape).

Exact resume: ``last.pt`` holds the model, optimizer, scheduler, EMA, scaler, epoch, step, all RNG
states and the number of samples already drawn this epoch; the sampler and the per-sample
augmentation seeds are functions of (seed, epoch, index), so a resumed run replays the remaining
batches bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cnnlab import __version__, config as config_mod
from cnnlab.config import TrainConfig
from cnnlab.data.loader import BadImageLog, make_loader
from cnnlab.data.sources.base import ImageSource
from cnnlab.data.sources.subset import SubsetSource
from cnnlab.data.transforms import DeviceNormalize, eval_transform, train_transform
from cnnlab.engine import checkpoint as ckpt_mod
from cnnlab.engine.device import amp_dtype, autocast, pick_device
from cnnlab.engine.evaluate import evaluate
from cnnlab.engine.optim import build_optimizer, build_scheduler
from cnnlab.engine.rundir import append_jsonl, git_revision, keep_jsonl, new_run_dir, plot_confusion, plot_curves, read_jsonl, write_json
from cnnlab.engine.small_map_conv import route_small_map_convs
from cnnlab.errors import CnnlabError
from cnnlab.models import Classifier, Preprocess, create_model
from cnnlab.models.layers import aux_loss


@dataclass
class TrainState:
    """Everything about the run's position that is not in a module's state_dict."""

    epoch: int = 0  # current epoch (0-based)
    samples_drawn: int = 0  # samples of this epoch already consumed (resume point)
    step: int = 0  # optimizer steps so far
    micro_step: int = 0  # micro-batches so far (accumulation)
    loss_sum: float = 0.0  # this epoch's running train loss × images
    correct: int = 0  # this epoch's running train top-1 hits
    seen: int = 0  # this epoch's train images
    train_seconds: float = 0.0  # all epochs
    train_images: int = 0  # all epochs
    best_top1: float = -1.0
    best_epoch: int = -1
    bad: list[str] = field(default_factory=list)


class NonFiniteLoss(CnnlabError):
    pass


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_preprocess(model: Classifier, overrides: dict) -> Preprocess:
    pre = model.meta.preprocess
    if overrides:
        d = pre.to_dict()
        unknown = set(overrides) - set(d)
        if unknown:
            raise CnnlabError(f"unknown preprocess key(s) {sorted(unknown)}; valid: {sorted(d)}")
        d.update(overrides)
        pre = Preprocess.from_dict(d)
    return pre


def prepare_for_training(
    model: nn.Module, pre: Preprocess, cfg: TrainConfig, device: torch.device, amp: torch.dtype | None
) -> DeviceNormalize:
    """Move ``model`` to the device and layout the step runs fastest in; returns the on-device normaliser."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cpu" and amp is torch.bfloat16:
        route_small_map_convs(model)  # oneDNN's bf16 conv backward is slow on maps of a few pixels
    return DeviceNormalize(pre, cfg.pca_lighting, cfg.channels_last).to(device)


def train_one_epoch(
    model: nn.Module,
    loader,
    normalize: DeviceNormalize,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    ema: AveragedModel | None,
    state: TrainState,
    device: torch.device,
    amp: torch.dtype | None,
    accum_steps: int,
    label_smoothing: float,
    clip_grad: float,
    bad_log: BadImageLog,
    seed: int,
    on_step: Callable[[TrainState, float], None] | None = None,
    progress=None,
) -> None:
    """Consume the loader (already positioned at ``state.samples_drawn``), updating ``state``."""
    model.train()
    normalize.train()
    for batch in loader:
        bad_log.update(batch)
        state.samples_drawn += batch.size
        if batch.labels.numel() == 0:
            continue
        images = batch.images.to(device, non_blocking=True)
        labels = batch.labels.to(device, non_blocking=True)
        # PCA-lighting noise from a generator keyed by the micro-step: resumable, worker-independent.
        gen = torch.Generator().manual_seed(seed * 7919 + state.micro_step)
        with autocast(device, amp):
            logits = model(normalize(images, generator=gen))
            criterion = partial(_cross_entropy, label_smoothing=label_smoothing)
            # GoogLeNet / Inception v3 add their auxiliary heads' weighted losses (0 for other models).
            loss = criterion(logits, labels) + aux_loss(model, criterion, labels)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLoss(
                f"loss became {loss_value} at optimizer step {state.step + 1} (epoch {state.epoch + 1}); "
                "nothing was saved from this step on: lower --lr, set --clip-grad, or check the data"
            )
        scaler.scale(loss / accum_steps).backward()
        state.micro_step += 1
        n = labels.numel()
        state.loss_sum += loss_value * n
        state.correct += int((logits.argmax(1) == labels).sum())
        state.seen += n
        if progress is not None:
            progress.update(batch.size)
        if state.micro_step % accum_steps:
            continue
        if clip_grad > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        state.step += 1
        if on_step is not None:
            on_step(state, loss_value)
        bad_log.check()


def train(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Run (or resume) a training run; returns the summary written to ``summary.json``."""
    from cnnlab.data.datasets import open_split

    if resume:
        run_dir = Path(resume)
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise CnnlabError(f"nothing to resume in {run_dir}: no checkpoints/last.pt (start a new run without --resume)")
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    amp = amp_dtype(cfg.amp, device)
    if cfg.accum_steps < 1 or cfg.batch_size < 1 or cfg.epochs < 1:
        raise CnnlabError("epochs, batch_size and accum_steps must be at least 1")

    train_src: ImageSource = open_split(cfg.data, "train", seed=cfg.seed)
    val_src: ImageSource = open_split(cfg.data, "val", seed=cfg.seed)
    train_src = SubsetSource.limit(train_src, cfg.train_limit, cfg.seed)
    val_src = SubsetSource.limit(val_src, cfg.val_limit, cfg.seed)
    classes = list(train_src.classes)

    ckpt = ckpt_mod.load(run_dir / "checkpoints" / "last.pt", map_location=device) if resume else None
    # A resumed run rebuilds the network its checkpoint describes (a darknet cfg's text travels in it),
    # so editing or moving a cfg file after starting does not change the run.
    model = ckpt_mod.build_model(ckpt["arch"]) if ckpt else create_model(cfg.model, num_classes=len(classes), **cfg.model_kwargs)
    pre = build_preprocess(model, cfg.preprocess)
    if cfg.init and cfg.finetune:
        raise CnnlabError("give either --init (same classes) or --finetune (new classifier), not both")
    if cfg.init and not resume:
        ckpt_mod.load_weights(model, _weights_from(cfg.init), cfg.init)
    if cfg.finetune and not resume:
        ckpt_mod.load_features(model, _weights_from(cfg.finetune))

    normalize = prepare_for_training(model, pre, cfg, device, amp)
    forward_model: nn.Module = torch.compile(model) if cfg.compile else model

    train_tf = train_transform(
        pre, cfg.crop, cfg.rrc_scale, cfg.rrc_ratio, cfg.hflip, cfg.rotation, cfg.translate, cfg.scale, cfg.color_jitter
    )
    pin = device.type == "cuda"
    train_loader = _shard_loader(train_src, pre, cfg, pin) or make_loader(
        train_src, train_tf, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers, drop_last=True, pin_memory=pin
    )
    val_loader = make_loader(val_src, eval_transform(pre), cfg.batch_size, shuffle=False, seed=cfg.seed, workers=cfg.workers, pin_memory=pin)
    micro_per_epoch = len(train_loader)
    if micro_per_epoch < cfg.accum_steps:
        raise CnnlabError(
            f"{len(train_src)} training images make {micro_per_epoch} batches of {cfg.batch_size}; "
            f"lower --batch-size (or --accum-steps) so an epoch has at least one optimizer step"
        )
    steps_per_epoch = micro_per_epoch // cfg.accum_steps

    optimizer = build_optimizer(model, cfg.opt, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.no_decay_bn_bias)
    scheduler = build_scheduler(
        optimizer,
        steps_per_epoch,
        cfg.epochs,
        sched=cfg.sched,
        warmup_epochs=cfg.warmup_epochs,
        warmup_factor=cfg.warmup_factor,
        step_size=cfg.step_size,
        milestones=cfg.milestones,
        gamma=cfg.gamma,
        min_lr_factor=cfg.min_lr_factor,
        pct_start=cfg.pct_start,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) if cfg.ema_decay > 0 else None

    state = TrainState()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.module.load_state_dict(ckpt["ema"])
            ema.n_averaged.fill_(ckpt["ema_n"])
        state = TrainState(**ckpt["train_state"])
        ckpt_mod.set_rng_state(ckpt["rng"])
        # A kill between logging an epoch and checkpointing it would log that epoch twice.
        keep_jsonl(run_dir / "metrics.jsonl", lambda r: r["epoch"] <= state.epoch)
        print(f"resuming {run_dir} at epoch {state.epoch + 1}, sample {state.samples_drawn} of {len(train_src)}")
    else:
        run_dir = new_run_dir(cfg.out, cfg.model, cfg.data)
        config_mod.save(cfg, run_dir / "config.yaml", {"cnnlab_version": __version__, "git_revision": git_revision()})

    def checkpoint(final_of_epoch: bool = False) -> dict:
        return {
            "format": ckpt_mod.FORMAT,
            "arch": ckpt_mod.arch_of(model, cfg.model_kwargs),
            "classes": classes,
            "preprocess": pre.to_dict(),
            "model": model.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "ema_n": int(ema.n_averaged) if ema is not None else 0,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "train_state": dataclasses.asdict(state),
            "rng": ckpt_mod.rng_state(),
            "config": config_mod.to_dict(cfg),
            "cnnlab_version": __version__,
        }

    writer = _tensorboard(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    per_epoch_images = (micro_per_epoch * cfg.batch_size)

    def on_step(st: TrainState, loss_value: float) -> None:
        if writer is not None and st.step % max(1, cfg.log_every) == 0:
            writer.add_scalar("train/loss", loss_value, st.step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], st.step)
        if cfg.ckpt_every and st.step % cfg.ckpt_every == 0 and st.samples_drawn < per_epoch_images:
            ckpt_mod.save_atomic(checkpoint(), ckpt_dir / "last.pt")

    from tqdm import tqdm

    report = None
    try:
        while state.epoch < cfg.epochs:
            epoch = state.epoch
            train_loader.sampler.set_epoch(epoch, start=state.samples_drawn)
            bad_log = BadImageLog(cfg.max_bad_fraction)
            bar = tqdm(
                total=per_epoch_images, initial=state.samples_drawn, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="img", disable=not cfg.progress, dynamic_ncols=True, leave=False,
            )
            t0 = time.perf_counter()
            images_before = state.seen
            train_one_epoch(
                forward_model, train_loader, normalize, optimizer, scheduler, scaler, ema, state, device, amp,
                cfg.accum_steps, cfg.label_smoothing, cfg.clip_grad, bad_log, cfg.seed, on_step, bar,
            )
            bar.close()
            seconds = time.perf_counter() - t0
            state.train_seconds += seconds
            state.train_images += state.seen - images_before
            bad_log.check(min_seen=0)
            state.bad = sorted(set(state.bad) | set(bad_log.bad))

            eval_model = ema.module if ema is not None else model
            val_bad = BadImageLog(cfg.max_bad_fraction)
            report = evaluate(eval_model, val_loader, normalize, device, classes, amp, val_bad, cfg.progress)
            state.bad = sorted(set(state.bad) | set(val_bad.bad))
            record = {
                "epoch": epoch + 1,
                "step": state.step,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": state.loss_sum / max(1, state.seen),
                "train_top1": 100.0 * state.correct / max(1, state.seen),
                "val_loss": report.loss,
                "val_top1": report.top1,
                "val_top5": report.top5,
                "epoch_seconds": seconds,
                "images_per_second": (state.seen - images_before) / max(seconds, 1e-9),
            }
            append_jsonl(run_dir / "metrics.jsonl", record)
            if writer is not None:
                for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5"):
                    writer.add_scalar(key.replace("_", "/", 1), record[key], epoch + 1)
            print(
                f"epoch {epoch + 1}/{cfg.epochs}  train loss {record['train_loss']:.4f} top-1 {record['train_top1']:.2f}%  "
                f"val loss {report.loss:.4f} top-1 {report.top1:.2f}% top-5 {report.top5:.2f}%  "
                f"{record['images_per_second']:.0f} img/s"
            )
            is_best = report.top1 > state.best_top1
            if is_best:
                state.best_top1, state.best_epoch = report.top1, epoch + 1
            state.epoch, state.samples_drawn = epoch + 1, 0
            state.loss_sum, state.correct, state.seen = 0.0, 0, 0
            ck = checkpoint()
            ckpt_mod.save_atomic(ck, ckpt_dir / "last.pt")
            if is_best:
                ckpt_mod.save_atomic(ck, ckpt_dir / "best.pt")
    finally:
        if writer is not None:
            writer.close()

    records = read_jsonl(run_dir / "metrics.jsonl")
    if report is None:  # resumed a finished run: report the final weights again
        eval_model = ema.module if ema is not None else model
        report = evaluate(eval_model, val_loader, normalize, device, classes, amp, None, False)
    summary = {
        "model": cfg.model,
        "data": cfg.data,
        "top1": report.top1,
        "top5": report.top5,
        "loss": report.loss,
        "kappa": report.kappa,
        "epochs": cfg.epochs,
        "best_top1": state.best_top1,
        "best_epoch": state.best_epoch,
        "train_seconds": state.train_seconds,
        "images_per_second": state.train_images / max(state.train_seconds, 1e-9),
        "train_images": len(train_src),
        "val_images": len(val_src),
        "bad_images": state.bad,
        "device": str(device),
        "amp": str(amp).replace("torch.", "") if amp else "off",
        "run_dir": str(run_dir),
    }
    write_json(run_dir / "summary.json", summary)
    write_json(run_dir / "valid.json", report.to_dict())
    plot_curves(records, run_dir / "curves.png")
    plot_confusion(report.confusion, classes, run_dir / "confusion_matrix.png")
    return summary


def _shard_loader(source: ImageSource, pre: Preprocess, cfg: TrainConfig, pin: bool):
    """The fused decode-and-crop loader for shards, when the augmentation is one it implements
    (random-resized crop + flip); otherwise None and the general loader runs the full pipeline."""
    from cnnlab.data.shards import ShardSource, make_shard_loader

    plain = not (cfg.rotation or cfg.translate or tuple(cfg.scale) != (1.0, 1.0) or cfg.color_jitter)
    if not (isinstance(source, ShardSource) and cfg.crop == "rrc" and plain):
        return None
    return make_shard_loader(
        source, pre.input_size[1:], pre.channels, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers,
        drop_last=True, rrc_scale=cfg.rrc_scale, rrc_ratio=cfg.rrc_ratio, hflip=cfg.hflip, pin_memory=pin,
    )  # fmt: skip


def _weights_from(path: str) -> dict:
    """Model weights from a cnnlab checkpoint or a plain state_dict file (torchvision/timm)."""
    p = ckpt_mod.resolve_path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CnnlabError(f"{p} is corrupt or not a PyTorch weights file ({type(e).__name__})") from None
    if isinstance(obj, dict) and obj.get("format") == ckpt_mod.FORMAT:
        return obj["ema"] if obj.get("ema") is not None else obj["model"]
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise CnnlabError(f"{p} holds neither a cnnlab checkpoint nor a state_dict")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but keep training if it is broken
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))
