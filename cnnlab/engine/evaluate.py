"""Evaluation: one pass over a loader → :class:`ClassificationReport`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from cnnlab.data.loader import BadImageLog
from cnnlab.data.transforms import DeviceNormalize
from cnnlab.engine.device import autocast
from cnnlab.metrics import ClassificationReport, build_metrics


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    normalize: DeviceNormalize,
    device: torch.device,
    classes: list[str],
    amp: torch.dtype | None = None,
    bad_log: BadImageLog | None = None,
    progress: bool = False,
) -> ClassificationReport:
    """Top-1/5, loss, confusion and per-class scores. Ten-crop batches ``(B, 10, C, H, W)`` are
    scored by averaging the ten softmax outputs, as in AlexNet / GoogLeNet evaluation."""
    from tqdm import tqdm

    model.eval()
    normalize.eval()
    metrics = build_metrics(len(classes), device)
    loss_sum, count = 0.0, 0
    for batch in tqdm(loader, desc="valid", leave=False, disable=not progress, unit="batch"):
        if bad_log is not None:
            bad_log.update(batch)
        if batch.labels.numel() == 0:
            continue
        labels = batch.labels.to(device, non_blocking=True)
        images = batch.images.to(device, non_blocking=True)
        with autocast(device, amp):
            if images.ndim == 5:  # ten-crop: (B, 10, C, H, W)
                b, n = images.shape[:2]
                logits = model(normalize(images.flatten(0, 1))).float().view(b, n, -1)
                probs = logits.softmax(-1).mean(1)
                loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum")
                scores = probs
            else:
                logits = model(normalize(images)).float()
                loss = F.cross_entropy(logits, labels, reduction="sum")
                scores = logits
        metrics.update(scores, labels)
        loss_sum += loss.item()
        count += labels.numel()
    if bad_log is not None:
        bad_log.check(min_seen=0)
    computed = metrics.compute() if count else None
    if computed is None:
        from cnnlab.errors import CnnlabError

        raise CnnlabError("no readable images to evaluate; check the data path and split")
    return ClassificationReport.from_metrics(computed, loss_sum / count, classes)
