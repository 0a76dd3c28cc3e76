"""Evaluation: one pass over a loader into the task's evaluator → its :class:`~cnnlab.engine.task.Report`.

Under several processes each rank evaluates its own share of the images (the loader is split by
rank without overlap or padding) and the evaluator's ``compute`` sums over ranks, so every image
counts exactly once.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.data.loader import BadImageLog
from cnnlab.data.transforms import DeviceNormalize
from cnnlab.engine.device import autocast
from cnnlab.engine.task import Evaluator, Report


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    normalize: DeviceNormalize,
    evaluator: Evaluator,
    device: torch.device,
    amp: torch.dtype | None = None,
    bad_log: BadImageLog | None = None,
    progress=None,
) -> Report:
    model.eval()
    normalize.eval()
    for batch in loader:
        if bad_log is not None:
            bad_log.update(batch)
        if progress is not None:
            progress.update(batch.size)
        if batch.labels.numel() == 0:
            continue
        images = batch.images.to(device, non_blocking=True)
        with autocast(device, amp):
            # ten-crop batches are (B, 10, C, H, W): normalise the crops as one batch
            x = normalize(images.flatten(0, 1)).unflatten(0, images.shape[:2]) if images.ndim == 5 else normalize(images)
            evaluator.update(model, x, batch)
    if progress is not None:
        progress.close()
    return evaluator.compute()
