"""ReLUs and residual adds fused into packed convolutions: where the pattern is safe, equal outputs,
and nothing fused where a value is used twice, the add broadcasts, or the forward does not trace."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.engine import kernel_choice
from cnnlab.engine.fold import fold_batchnorm
from cnnlab.engine.fuse_relu import PackedConvAddReLU, fuse_relus
from cnnlab.engine.packed_conv import PackedConv2d, pack_convolutions, packing_available
from cnnlab.engine.winograd import WinogradConv2d
from cnnlab.models import create_model

pytestmark = pytest.mark.skipif(not packing_available(), reason="needs oneDNN's packed convolutions")


def _prepared(model: nn.Module, size: tuple[int, ...]) -> nn.Module:
    model = model.eval()
    fold_batchnorm(model)
    model = model.to(memory_format=torch.channels_last)
    pack_convolutions(model, size, winograd_too=True)
    return model


def _kinds(m: nn.Module) -> tuple[int, int]:
    """(convs with a fused ReLU, conv+add+ReLU modules)"""
    relu = sum(isinstance(c, (PackedConv2d, WinogradConv2d)) and c.attr == "relu" for c in m.modules())
    return relu, sum(isinstance(c, PackedConvAddReLU) for c in m.modules())


@pytest.mark.parametrize("kernel", ["timed", "packed", "winograd F(2x2)", "winograd F(4x4)"])
def test_resnet18_blocks_fuse_and_give_the_same_outputs(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kernel != "timed":  # force one candidate on every 3×3 stride-1 conv
        pick = {"packed": "packed", "winograd F(2x2)": "winograd2", "winograd F(4x4)": "winograd4"}[kernel]
        monkeypatch.setattr(kernel_choice, "choose", lambda seconds, handicaps: pick)
    model = create_model("resnet18", num_classes=5).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
    x = torch.rand(2, 3, 64, 64, generator=g).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = model(x)
    net = _prepared(model, (2, 3, 64, 64))
    fused = fuse_relus(net, x)
    # the stem and each block's first conv take their ReLU; each block's second conv its add + ReLU
    assert _kinds(fused) == (1 + 8, 8)
    assert _kinds(net) == (0, 0)  # the traced-from network is left as it was
    if kernel.startswith("winograd"):  # layer1-4: 4 + 3 + 3 + 3 stride-1 3×3 convs
        assert sum(isinstance(c, WinogradConv2d) for c in net.modules()) == 13
    with torch.inference_mode():
        np.testing.assert_allclose(fused(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(net(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


class _ConvUsedTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.relu(y) + y  # the pre-ReLU value is needed too


class _BiasAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.shift = nn.Parameter(torch.randn(1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x) + self.shift)  # a broadcast add, not a residual


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent: does not trace
            return torch.relu(self.conv(x))
        return x


def test_nothing_fuses_where_a_value_is_used_twice_the_add_broadcasts_or_the_forward_does_not_trace() -> None:
    x = torch.randn(1, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    for model in (_ConvUsedTwice(), _BiasAdd(), _Branchy()):
        net = _prepared(model, (1, 3, 8, 8))
        with torch.inference_mode():
            want = net(x)
            assert fuse_relus(net, x) is net, type(model).__name__
            assert torch.allclose(fuse_relus(net, x)(x), want)
