"""Shared by the export tests: a few threads, mnist5k as tensors, brief training, checkpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.model_meta import Preprocess

MNIST_32 = Preprocess(input_size=(1, 32, 32), mean=(0.1307,), std=(0.3081,), resize=28)


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    torch.set_num_threads(1)  # two threads on two shared, busy cores ran 7x slower here (OpenMP spinning)


def mnist_uint8(split: str, pre: Preprocess, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) uint8 through the model's eval preprocessing, and (N,) labels."""
    from cnnlab.data.datasets import open_split
    from cnnlab.data.transforms import eval_transform

    src, tf = open_split("mnist5k", split), eval_transform(pre)
    n = len(src) if limit is None else min(limit, len(src))
    return torch.stack([tf(src.load(i)) for i in range(n)]), torch.tensor([src.label(i) for i in range(n)])


@pytest.fixture(scope="session")
def mnist_train() -> tuple[torch.Tensor, torch.Tensor]:
    return mnist_uint8("train", MNIST_32, 2048)


@pytest.fixture(scope="session")
def mnist_val() -> tuple[torch.Tensor, torch.Tensor]:
    return mnist_uint8("val", MNIST_32)  # the 1,000 held-out digits


def train_briefly(
    model: nn.Module, pre: Preprocess, data: tuple[torch.Tensor, torch.Tensor], steps: int = 40, lr: float = 0.05, smoothing: float = 0.0
) -> nn.Module:
    """A few dozen SGD steps on mnist5k (enough for non-trivial weights and BatchNorm statistics)."""
    from cnnlab.export.graph import normalize_uint8

    images, labels = data
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(images), (32,), generator=gen)
        out = model(normalize_uint8(images[idx], pre))
        loss = nn.functional.cross_entropy(out, labels[idx], label_smoothing=smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _recalibrate_batchnorm(model, pre, images[:512])
    return model.eval()


@torch.no_grad()
def _recalibrate_batchnorm(model: nn.Module, pre: Preprocess, images: torch.Tensor) -> None:
    """BatchNorm statistics set to their average over 512 training images ("precise BN"): after a
    few dozen steps the running averages still mostly hold their initial (0, 1) (darknet's rolling
    update moves 1% a step) and eval-mode logits of a ResNet reached 1e4."""
    from cnnlab.darknet.layers import DarknetBatchNorm
    from cnnlab.export.graph import normalize_uint8

    bns = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, DarknetBatchNorm))]
    sums: dict[nn.Module, list[torch.Tensor]] = {bn: [] for bn in bns}

    def hook(bn: nn.Module, args: tuple[torch.Tensor]) -> None:
        x = args[0].transpose(0, 1).flatten(1)  # (C, N·H·W)
        sums[bn].append(torch.stack([x.mean(1), x.var(1)]))

    handles = [bn.register_forward_pre_hook(hook) for bn in bns]
    model.train()
    for i in range(0, len(images), 128):
        model(normalize_uint8(images[i : i + 128], pre))
    for h in handles:
        h.remove()
    for bn, stats in sums.items():
        mean_var = torch.stack(stats).mean(0)
        bn.running_mean.copy_(mean_var[0])
        bn.running_var.copy_(mean_var[1])


def save_checkpoint(model: nn.Module, classes: list[str], pre: Preprocess, path: Path) -> Path:
    """A cnnlab checkpoint as training writes one (architecture, weights, classes, preprocessing)."""
    from cnnlab.engine import checkpoint as ckpt_mod

    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"format": ckpt_mod.FORMAT, "arch": ckpt_mod.arch_of(model), "model": model.state_dict(), "classes": classes, "preprocess": pre.to_dict()}
    ckpt_mod.save_atomic(ckpt, path)
    return path


def resnet18_mnist() -> tuple[nn.Module, Preprocess]:
    """ResNet-18 at the mnist size: one channel, 32×32 (its ImageNet stem leaves 1×1 at layer4)."""
    from cnnlab.models import create_model

    model = create_model("resnet18", num_classes=10, in_chans=1)
    pre = replace(MNIST_32)
    return model, pre
