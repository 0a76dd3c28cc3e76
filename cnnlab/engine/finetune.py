"""Fine-tuning: frozen stages, a separate learning rate for the head, layer-wise lr decay, and the
epoch at which the frozen stages start to train.

A frozen stage gets ``requires_grad=False`` (no gradient, so it is left out of the optimizer and of
weight decay) and stays in eval mode through every ``model.train()`` (``Classifier.frozen``): its
BatchNorm layers normalise with the statistics they were loaded with and never update them, and
its dropout is off — a fixed function of the input, which is what a frozen layer means. ultralytics'
``freeze`` only clears ``requires_grad``, so its frozen BatchNorm statistics keep drifting.

The freezing is a function of the config and the epoch alone, so a resumed run rebuilds it:
:meth:`Finetune.setup_optimizer` freezes, builds the optimizer, and — when the checkpoint is past
``--unfreeze-at`` — adds the unfrozen parameters as the original run did, in the same order, before
the optimizer's state is loaded into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.models._base import Classifier, Stage


def frozen_count(model: nn.Module, spec: str) -> int:
    """How many leading stages ``--freeze`` (and a darknet cfg's ``stopbackward=1``) freeze."""
    if not isinstance(model, Classifier):
        if spec:
            raise CnnlabError(f"--freeze works on classifiers; {type(model).__name__} has no stages to freeze")
        return 0
    n_stages = len(model.stages())
    if spec == "features":
        n = model.feature_stages()
    elif spec:
        n = int(spec)
        if n > n_stages:
            raise CnnlabError(f"--freeze {n}: {model.meta.name} has {n_stages} stages before its classifier; use at most {n_stages}, or --freeze features")
    else:
        n = 0
    return max(n, model.frozen_by_design())


def set_frozen(model: Classifier, n: int) -> list[Stage]:
    """Freeze the first ``n`` stages (and unfreeze the rest); returns the frozen ones."""
    for name in model.frozen:  # what an earlier call froze trains again
        model.get_submodule(name).requires_grad_(True)
    stages = model.stages()
    names = [name for _, names in stages[:n] for name in names]
    for name in names:
        model.get_submodule(name).requires_grad_(False)
    model.frozen = tuple(names)
    model.train(model.training)  # puts the frozen modules in eval mode now
    return stages[:n]


def lr_scales(model: nn.Module, head_lr_mult: float, layer_decay: float) -> dict[str, float]:
    """Each parameter's lr multiplier: stage i of n gets layer_decay^(n - i), the head head_lr_mult."""
    if not isinstance(model, Classifier):
        return {name: 1.0 for name, _ in model.named_parameters()}
    stages = model.stages()
    owner = {name: i for i, (_, names) in enumerate(stages) for name in names}
    scales = {}
    for name, _ in model.named_parameters():
        parts = name.split(".")
        stage = next((owner[".".join(parts[:k])] for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in owner), None)
        scales[name] = head_lr_mult if stage is None else layer_decay ** (len(stages) - stage)
    return scales


def param_groups(model: nn.Module, cfg: TrainConfig, skip: set[int] = frozenset()) -> list[dict]:  # type: ignore[assignment]
    """Optimizer groups of the trainable parameters not in ``skip`` (ids), one per (lr scale, decay or
    not), ordered by first appearance so the same model always gives the same groups."""
    scales = lr_scales(model, cfg.head_lr_mult, cfg.layer_decay)
    groups: dict[tuple[float, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in skip:
            continue
        decay = not (cfg.no_decay_bn_bias and p.ndim <= 1)  # BatchNorm scales/shifts and biases: no decay
        key = (scales[name], decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": cfg.lr * key[0], "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": key[0]}
        groups[key]["params"].append(p)
    return list(groups.values())


def add_to_optimizer(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, groups: list[dict]) -> None:
    """New parameter groups mid-run, on the same schedule as the others: LambdaLR keeps one base lr and
    one lr function per group, so both lists grow with the groups and the new lr is set for this step."""
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for group in groups:
        group["initial_lr"] = group["lr"]
        optimizer.add_param_group(group)
        scheduler.base_lrs.append(group["initial_lr"])
        scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
        optimizer.param_groups[-1]["lr"] = group["initial_lr"] * factor
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # what get_last_lr() reports


@dataclass
class Finetune:
    """The run's freezing: how many stages start frozen, and from which epoch everything trains."""

    frozen: int  # leading stages frozen at the start
    unfreeze_at: int  # 1-based epoch from which they train; 0 = never

    @classmethod
    def from_config(cls, model: nn.Module, cfg: TrainConfig) -> "Finetune":
        n = frozen_count(model, cfg.freeze)
        if cfg.unfreeze_at and not n:
            raise CnnlabError("--unfreeze-at needs frozen stages: add --freeze N or --freeze features")
        if cfg.unfreeze_at == 1:
            raise CnnlabError("--unfreeze-at 1 trains every stage from the first epoch, so nothing stays frozen: "
                              "use 2 or later, or drop --freeze")  # fmt: skip
        if cfg.unfreeze_at > cfg.epochs:
            raise CnnlabError(f"--unfreeze-at {cfg.unfreeze_at} is after the last epoch (--epochs {cfg.epochs}): "
                              f"use at most {cfg.epochs}, or drop --unfreeze-at to keep the stages frozen")  # fmt: skip
        return cls(n, cfg.unfreeze_at)

    @property
    def active(self) -> bool:
        return self.frozen > 0

    def unfrozen_by(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) trains everything."""
        return self.active and self.unfreeze_at > 0 and epoch + 1 >= self.unfreeze_at

    def freeze(self, model: nn.Module) -> str:
        """Freeze the starting stages; the line that says what got frozen."""
        if not self.active:
            return ""
        frozen = set_frozen(model, self.frozen)
        return describe(model, frozen, self.unfreeze_at)

    def unfreeze(self, model: Classifier, optimizer: torch.optim.Optimizer, scheduler, cfg: TrainConfig) -> str:
        """Every stage trains from now on; its parameters join the optimizer."""
        known = {id(p) for g in optimizer.param_groups for p in g["params"]}
        set_frozen(model, 0)
        groups = param_groups(model, cfg, skip=known)
        add_to_optimizer(optimizer, scheduler, groups)
        n = sum(p.numel() for g in groups for p in g["params"])
        return f"unfrozen: all {len(model.stages())} stages train from now on ({n:,} more parameters)"


def describe(model: nn.Module, frozen: list[Stage], unfreeze_at: int) -> str:
    stages = model.stages()
    n_frozen = sum(p.numel() for _, names in frozen for name in names for p in model.get_submodule(name).parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    norms = sum(isinstance(m, nn.modules.batchnorm._NormBase) for _, names in frozen for name in names for m in model.get_submodule(name).modules())
    labels = ", ".join(label for label, _ in frozen)
    bn = f"; {norms} BatchNorm layer(s) keep their statistics" if norms else ""
    until = f"; they train from epoch {unfreeze_at} on" if unfreeze_at else ""
    return f"frozen: {len(frozen)} of {len(stages)} stages ({labels}): {n_frozen:,} parameters get no gradient{bn}; {n_train:,} train{until}"
