"""Optimizers and learning-rate schedules.

The schedule is a pure function of the optimizer step (``lr_factor``), wrapped in ``LambdaLR`` so
its position is saved and restored with the checkpoint like any torch scheduler.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnlab.errors import CnnlabError


def param_groups(model: nn.Module, weight_decay: float, no_decay_bn_bias: bool) -> list[dict]:
    """Weight decay on weights only: BatchNorm scales/shifts and biases (1-D tensors) are exempt."""
    if not no_decay_bn_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module, opt: str, lr: float, momentum: float, nesterov: bool, weight_decay: float, no_decay_bn_bias: bool,
    groups: list[dict] | None = None,
) -> torch.optim.Optimizer:
    """``groups`` (each with its own lr, e.g. fine-tuning's) replace the default decay / no-decay split."""
    groups = groups if groups is not None else param_groups(model, weight_decay, no_decay_bn_bias)
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise CnnlabError(f"opt must be sgd or adamw, not {opt!r}")


def lr_factor(
    step: int,
    steps_per_epoch: int,
    epochs: int,
    sched: str,
    warmup_epochs: float = 0.0,
    warmup_factor: float = 0.01,
    step_size: int = 30,
    milestones: list[int] | tuple[int, ...] = (),
    gamma: float = 0.1,
    min_lr_factor: float = 0.0,
    pct_start: float = 0.25,
) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based)."""
    total = max(1, epochs * steps_per_epoch)
    epoch = step / steps_per_epoch  # fractional epoch
    warmup_steps = warmup_epochs * steps_per_epoch
    if sched != "onecycle" and step < warmup_steps:
        return warmup_factor + (1 - warmup_factor) * step / warmup_steps
    if sched == "constant":
        return 1.0
    if sched == "step":
        return gamma ** int(epoch // step_size)
    if sched == "multistep":
        return gamma ** sum(epoch >= m for m in milestones)
    if sched == "cosine":
        t = (step - warmup_steps) / max(1, total - warmup_steps)
        return min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    if sched == "onecycle":
        # Rise from warmup_factor to 1 over pct_start of the run, then anneal to min_lr_factor
        # (cosine both ways, as in Smith & Topin 2017 and torch's OneCycleLR).
        rise = max(1, int(pct_start * total))
        if step < rise:
            return warmup_factor + (1 - warmup_factor) * 0.5 * (1 - math.cos(math.pi * step / rise))
        t = (step - rise) / max(1, total - rise)
        return min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    raise CnnlabError(f"sched must be constant, step, multistep, cosine or onecycle, not {sched!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, **sched_kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, steps_per_epoch, epochs, **sched_kwargs)  # validate the name now, not mid-run
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, epochs, **sched_kwargs))
