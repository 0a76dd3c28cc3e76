"""Building a run from its config: the data (``load_data``), the model on its device, the optimizer and
the learning-rate schedule. Each function takes the few config values it needs."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data.loader import make_loader
from cnnlab.data.samplers import ClassBalancedSampler
from cnnlab.data.sources.base import ImageSource
from cnnlab.data.sources.detection import DetectionSource
from cnnlab.data.sources.subset import ClassSubset, SubsetSource, per_class, pick_classes
from cnnlab.data.transforms import DeviceNormalize, eval_transform, train_transform
from cnnlab.engine import finetune
from cnnlab.engine.distributed import Dist
from cnnlab.engine.optim import build_optimizer, build_scheduler
from cnnlab.engine.small_map_conv import route_small_map_convs
from cnnlab.errors import CnnlabError
from cnnlab.model_meta import Preprocess


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Data:
    train: ImageSource
    val: ImageSource
    notes: list[str] = field(default_factory=list)  # what the subset options could not do exactly, for the log

    @property
    def classes(self) -> list[str]:
        return list(self.train.classes)


def load_sources(cfg: TrainConfig) -> Data:
    """The training and validation sources: ``--classes`` on both, ``--per-class`` on the training
    split, then ``--train-limit``/``--val-limit``."""
    from cnnlab.data.datasets import open_split
    from cnnlab.data.detection_sets import open_detection_split

    if cfg.task == "detect" and (cfg.classes or cfg.per_class):
        raise CnnlabError("--classes and --per-class pick images by their one class; detection images hold boxes of "
                          "several: select the classes in the labels (and names=) instead")  # fmt: skip
    if cfg.task == "detect":
        train = open_detection_split(cfg.data, "train", seed=cfg.seed)
        val = open_detection_split(cfg.data, "val", seed=cfg.seed, classes=train.classes)  # numbered as train's
    else:
        train, val = open_split(cfg.data, "train", seed=cfg.seed), open_split(cfg.data, "val", seed=cfg.seed)
    notes = []
    if cfg.task != "detect" and isinstance(train, DetectionSource):  # said: a forgotten --task detect trained silently
        notes.append(f"{cfg.data} is detection data (boxes): each image is labelled by its first box's class for "
                     f"--task {cfg.task}; pass --task detect to train a detector")  # fmt: skip
    if cfg.classes:
        keep = pick_classes(train, cfg.classes)
        train, val = ClassSubset(train, keep), ClassSubset(val, keep)
    if cfg.per_class:
        train, short = per_class(train, cfg.per_class, cfg.seed)
        if short:
            notes.append(f"--per-class {cfg.per_class}: class(es) {', '.join(short)} have fewer training images; all of theirs are used")
    train = SubsetSource.limit(train, cfg.train_limit, cfg.seed)
    val = SubsetSource.limit(val, cfg.val_limit, cfg.seed)
    return Data(train, val, notes)


def build_preprocess(model: nn.Module, overrides: dict, trained_with: Preprocess | None = None) -> Preprocess:
    """The model's preprocessing — or, when the run starts from a cnnlab checkpoint, the one its
    weights were trained with (the features expect that normalisation) — then ``--preprocess`` keys."""
    pre = trained_with or model.meta.preprocess
    if overrides:
        d = pre.to_dict()
        unknown = set(overrides) - set(d)
        if unknown:
            raise CnnlabError(f"unknown preprocess key(s) {sorted(unknown)}; valid: {sorted(d)}")
        d.update(overrides)
        pre = Preprocess.from_dict(d)
    return pre


def inherited_preprocess_line(model: nn.Module, pre: Preprocess, trained_with: Preprocess | None, source: str) -> str:
    """The line saying the run takes its start weights' preprocessing, when that is not the model's own."""
    if trained_with is None or trained_with == model.meta.preprocess:
        return ""
    d = trained_with.to_dict()
    return (f"preprocessing from {source} (its weights were trained with it): mean {d['mean']}, std {d['std']}, "
            f"input {d['input_size']}" + (" (--preprocess keys on top)" if pre != trained_with else ""))


def load_data(cfg: TrainConfig, data: Data, pre: Preprocess, dist: Dist, pin: bool, task=None, model: nn.Module | None = None):
    """``(train_loader, val_loader)``, each this rank's share: training batches drop the remainder so
    every rank takes the same number of steps; validation keeps every image exactly once. A task
    with loaders of its own (detection) gives them."""
    own = task.loaders(cfg, data, model, dist.rank, dist.world, pin) if task is not None else None
    if own is not None:
        return own
    train = _shard_loader(data.train, pre, cfg, dist, pin)
    if train is None:
        tf = train_transform(pre, cfg.crop, cfg.rrc_scale, cfg.rrc_ratio, cfg.hflip, cfg.rotation, cfg.translate, cfg.scale, cfg.color_jitter)
        sampler = _balanced_sampler(cfg, data.train, dist)
        train = make_loader(data.train, tf, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers,
                            drop_last=True, rank=dist.rank, world=dist.world, pin_memory=pin, sampler=sampler)  # fmt: skip
    val = make_loader(data.val, eval_transform(pre), cfg.batch_size, shuffle=False, seed=cfg.seed, workers=cfg.workers,
                      rank=dist.rank, world=dist.world, pin_memory=pin)  # fmt: skip
    return train, val


def _balanced_sampler(cfg: TrainConfig, source: ImageSource, dist: Dist):
    if cfg.balance == "none":
        return None
    return ClassBalancedSampler(source.labels(), cfg.seed, dist.rank, dist.world, cfg.balance_alpha)


def _shard_loader(source: ImageSource, pre: Preprocess, cfg: TrainConfig, dist: Dist, pin: bool):
    """The fused decode-and-crop loader for shards, when the augmentation is one it implements
    (random-resized crop + flip, natural class frequencies); otherwise None and the general loader
    runs the full pipeline."""
    from cnnlab.data.shards import ShardSource, make_shard_loader

    plain = not (cfg.rotation or cfg.translate or tuple(cfg.scale) != (1.0, 1.0) or cfg.color_jitter)
    if not (isinstance(source, ShardSource) and cfg.crop == "rrc" and plain and cfg.balance == "none"):
        return None
    return make_shard_loader(
        source, pre.input_size[1:], pre.channels, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers,
        drop_last=True, rank=dist.rank, world=dist.world, rrc_scale=cfg.rrc_scale, rrc_ratio=cfg.rrc_ratio,
        hflip=cfg.hflip, pin_memory=pin,
    )  # fmt: skip


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


def build_optimization(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """``(optimizer, scheduler)``; the schedule is stepped every optimizer step. Fine-tuning runs (frozen
    stages, a head or layer-wise lr) get a group per lr; others the plain decay / no-decay pair."""
    tuned = cfg.freeze or cfg.head_lr_mult != 1 or cfg.layer_decay != 1 or bool(getattr(model, "frozen", ()))
    groups = finetune.param_groups(model, cfg) if tuned else None
    if groups is not None and not cfg.unfreeze_at and not any(g["lr_scale"] > 0 for g in groups):
        frozen_by = f"--freeze {cfg.freeze}" if cfg.freeze else "the cfg's stopbackward=1"
        raise CnnlabError(
            f"nothing would train: every stage is frozen ({frozen_by}) and --head-lr-mult {cfg.head_lr_mult:g} "
            "gives the head no learning rate; raise --head-lr-mult, freeze fewer stages, or add --unfreeze-at EPOCH"
        )
    optimizer = build_optimizer(model, cfg.opt, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.no_decay_bn_bias, groups)
    scheduler = build_scheduler(
        optimizer, steps_per_epoch, cfg.epochs, sched=cfg.sched, warmup_epochs=cfg.warmup_epochs,
        warmup_factor=cfg.warmup_factor, step_size=cfg.step_size, milestones=cfg.milestones, gamma=cfg.gamma,
        min_lr_factor=cfg.min_lr_factor, pct_start=cfg.pct_start,
    )  # fmt: skip
    return optimizer, scheduler


def steps_per_epoch(micro_batches: int, cfg: TrainConfig, n_images: int, world: int) -> int:
    if micro_batches < cfg.accum_steps:
        raise CnnlabError(
            f"{n_images} training images make {micro_batches} batches of {cfg.batch_size} per process "
            f"({world} process{'es' if world > 1 else ''}); lower --batch-size (or --accum-steps) so an epoch has "
            "at least one optimizer step"
        )
    return micro_batches // cfg.accum_steps
