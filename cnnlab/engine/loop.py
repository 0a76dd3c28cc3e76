"""The step and the epoch: ``train_step`` (one micro-batch forward/backward, and the optimizer
update every ``accum_steps``) and ``train_one_epoch`` (the loader to its end). Plain functions with
explicit arguments, in the shape of torchvision's reference ``train_one_epoch``; nothing here names a
task, prints, or writes a file — the task gives the loss terms, hooks do the rest.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils._pytree import tree_flatten

from cnnlab.data.loader import Batch, BadImageLog
from cnnlab.data.transforms import DeviceNormalize
from cnnlab.engine import distributed
from cnnlab.engine.device import autocast
from cnnlab.engine.state import TrainState
from cnnlab.engine.task import Task
from cnnlab.errors import NonFiniteLoss
from cnnlab.models.layers import unwrap


@dataclass
class Trainer:
    """What every step uses: the (possibly DDP-wrapped) model, its task, the optimizer and friends."""

    model: nn.Module
    task: Task
    normalize: DeviceNormalize
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None
    device: torch.device
    amp: torch.dtype | None
    accum_steps: int = 1
    clip_grad: float = 0.0
    seed: int = 0
    input_size: tuple[int, ...] = ()  # (C, H, W) of a training image; () = the model's own

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def train_step(t: Trainer, batch: Batch, state: TrainState) -> dict[str, float] | None:
    """Forward and backward one micro-batch; after every ``accum_steps``-th, the optimizer update.
    Returns the loss terms when the optimizer stepped (empty when this rank's last micro-batch had no
    readable image), else None."""
    updates = (state.micro_step + 1) % t.accum_steps == 0
    # DDP all-reduces gradients in backward; between optimizer steps there is nothing to reduce yet.
    no_sync = t.model.no_sync() if not updates and hasattr(t.model, "no_sync") else contextlib.nullcontext()
    with no_sync:
        values = forward_backward(t, batch, state) if batch.labels.numel() else idle_backward(t)
    state.micro_step += 1
    if not updates:
        return None
    optimizer_step(t)
    state.step += 1
    return values


def forward_backward(t: Trainer, batch: Batch, state: TrainState) -> dict[str, float]:
    images = batch.images.to(t.device, non_blocking=True)
    targets = t.task.targets(batch)
    # PCA-lighting noise from a generator keyed by the micro-step: resumable, worker-independent.
    gen = torch.Generator().manual_seed(t.seed * 7919 + state.micro_step)
    with autocast(t.device, t.amp):
        try:
            terms, outputs = t.task.losses(t.model, t.normalize(images, generator=gen), targets)
        except NonFiniteLoss as e:  # raised inside the loss (e.g. a NaN IoU): say when
            raise NonFiniteLoss(f"optimizer step {state.step + 1} (epoch {state.epoch + 1}): {e}") from None
        loss = sum(terms.values())
    values = {name: term.item() for name, term in terms.items()}
    total = loss.item()
    if not math.isfinite(total):
        raise NonFiniteLoss(
            f"loss became {total} ({', '.join(f'{k} {v}' for k, v in values.items())}) at optimizer step "
            f"{state.step + 1} (epoch {state.epoch + 1}); nothing was saved from this step on: {t.task.nonfinite_advice}"
        )
    t.scaler.scale(loss / t.accum_steps).backward()
    state.add(total, batch.labels.numel(), t.task.tally(outputs, targets))
    return values | {"loss": total}


def idle_backward(t: Trainer) -> dict[str, float]:
    """A micro-batch in which no image of this rank was readable. Under DDP the other ranks' backward
    waits in an all-reduce of the gradients, so this rank runs a backward too, of weight zero: one
    stand-in input through the network in eval mode (running statistics untouched, no dropout draw)
    and zero times its outputs. DDP divides the sum by the world size, so the step's gradient is the
    other ranks' scaled by (world - 1) / world, as if this rank's images had contributed nothing."""
    size = t.input_size or unwrap(t.model).meta.preprocess.input_size
    was_training = t.model.training
    t.model.eval()
    try:
        with autocast(t.device, t.amp):
            out = t.model(torch.zeros(1, *size, device=t.device))
        leaves = [x for x in tree_flatten(out)[0] if torch.is_tensor(x) and x.is_floating_point()]
        t.scaler.scale(sum(x.float().sum() for x in leaves) * 0.0).backward()
    finally:
        t.model.train(was_training)
    return {}


def optimizer_step(t: Trainer) -> None:
    if t.clip_grad > 0:
        t.scaler.unscale_(t.optimizer)
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.clip_grad)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.optimizer.zero_grad(set_to_none=True)
    t.scheduler.step()
    if t.ema is not None:
        t.ema.update_parameters(t.model)


def train_one_epoch(
    t: Trainer,
    loader,
    state: TrainState,
    bad_log: BadImageLog,
    after_step: Callable[[TrainState, dict[str, float]], None] | None = None,
    progress=None,
) -> None:
    """Consume ``loader`` (already positioned at ``state.samples_drawn``), updating ``state``."""
    t.model.train()
    t.normalize.train()
    for batch in loader:
        bad_log.update(batch)
        state.samples_drawn += batch.size
        if progress is not None:
            progress.update(batch.size)
        if batch.labels.numel() == 0 and not distributed.active():
            continue  # one process: nothing waits for this micro-batch (with several, see idle_backward)
        losses = train_step(t, batch, state)
        if losses is not None and after_step is not None:
            after_step(state, losses)
