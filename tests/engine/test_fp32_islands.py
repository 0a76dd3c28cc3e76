"""bf16 inference and export of networks with a layer torch has no bfloat16 kernel for (LRN, cdist):
that layer runs in float32, the rest in bfloat16, and the user is told which layer."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from cnnlab.engine import inference
from cnnlab.engine.fp32_islands import Fp32Island, run_unsupported_in_fp32
from cnnlab.engine.inference import InferenceOptions, prepare
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model

CPU = torch.device("cpu")


def _lrn_fails_in_bf16() -> bool:
    try:
        nn.LocalResponseNorm(3)(torch.zeros(1, 4, 4, 4, dtype=torch.bfloat16))
        return False
    except (NotImplementedError, RuntimeError):
        return True


needs_the_gap = pytest.mark.skipif(not _lrn_fails_in_bf16(), reason="this torch computes LocalResponseNorm in bf16")


class LrnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.lrn = nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 16 * 16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lrn(torch.relu(self.conv(x))))


class CdistInItsOwnForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 6)
        self.register_buffer("centers", torch.randn(4, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(self.fc(x.flatten(1)), self.centers)


@needs_the_gap
def test_the_layer_without_a_bf16_kernel_runs_in_float32_and_is_named() -> None:
    torch.manual_seed(0)
    net = LrnNet().eval().to(torch.bfloat16)
    wrapped = run_unsupported_in_fp32(net, torch.zeros(1, 3, 16, 16, dtype=torch.bfloat16))
    assert wrapped == ["lrn"] and isinstance(net.lrn, Fp32Island)
    assert net.lrn.layer.size == 5  # attributes still reach the layer
    assert isinstance(net.conv, nn.Conv2d) and net.conv.weight.dtype == torch.bfloat16  # the rest stays bf16
    out = net(torch.rand(2, 3, 16, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4)


@needs_the_gap
def test_bf16_engine_runs_a_net_with_lrn_close_to_fp32() -> None:
    if not inference.bf16_supported(CPU):
        pytest.skip("this CPU has no native bf16")
    torch.manual_seed(0)
    model = LrnNet().eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    log = io.StringIO()
    out = prepare(model, (3, 16, 16), CPU, InferenceOptions(precision="bf16"), log=log)(x)
    assert "no bfloat16 kernel here for lrn (LocalResponseNorm); computed in float32" in log.getvalue()
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
    assert isinstance(model.lrn, nn.LocalResponseNorm)  # the caller's model is left alone


def test_lenet5_paper_runs_in_bf16_without_a_float32_layer() -> None:
    """Its RBF output is written as a sum of squares (cdist has no bf16 CPU kernel) and its C3 table
    places kernels with a one-hot matmul, so the whole net runs in bf16."""
    net = create_model("lenet5_paper", num_classes=10).eval().to(torch.bfloat16)
    assert run_unsupported_in_fp32(net, torch.zeros(1, 1, 32, 32, dtype=torch.bfloat16)) == []


def test_a_failure_in_the_networks_own_forward_is_one_clear_error() -> None:
    if _cdist_works_in_bf16():
        pytest.skip("this torch computes cdist in bf16")
    net = CdistInItsOwnForward().eval().to(torch.bfloat16)
    with pytest.raises(CnnlabError, match="cannot run in bfloat16 on this device .*cdist.*; use --precision fp32"):
        run_unsupported_in_fp32(net, torch.zeros(1, 3, 8, 8, dtype=torch.bfloat16))


def _cdist_works_in_bf16() -> bool:
    try:
        torch.cdist(torch.zeros(2, 3, dtype=torch.bfloat16), torch.zeros(2, 3, dtype=torch.bfloat16))
        return True
    except (NotImplementedError, RuntimeError):
        return False


def test_other_failures_are_left_to_the_real_call() -> None:
    """A net that fails for another reason (here: a fixed batch) is not this trial's to report."""

    class FixedBatch(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.view(4, -1)

    assert run_unsupported_in_fp32(FixedBatch(), torch.zeros(1, 3, 8, 8, dtype=torch.bfloat16)) == []
