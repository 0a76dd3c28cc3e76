"""LeNet-5 as in LeCun et al. 1998: per-layer trainable parameters, the sparse C3 table, scaled tanh,
and the fixed RBF output."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models import create_model
from cnnlab.models.lenet import C3_TABLE, SparseConv, scaled_tanh


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_per_layer_parameters_are_the_papers() -> None:
    m = create_model("lenet5_paper")
    layers = {name: _count(getattr(m, name)) for name in ("c1", "s2", "c3", "s4", "c5", "f6", "output")}
    assert layers == {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48120, "f6": 10164, "output": 0}
    assert _count(m) == 60_000


def test_linear_output_variant() -> None:
    m = create_model("lenet5_paper", output="linear")
    assert _count(m) == 60_000 + 84 * 10 + 10
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_c3_connects_only_the_tabled_maps() -> None:
    torch.manual_seed(0)
    c3 = SparseConv(C3_TABLE, 6)
    x = torch.randn(1, 6, 14, 14, requires_grad=True)
    for j, inputs in enumerate(C3_TABLE):
        (grad,) = torch.autograd.grad(c3(x)[0, j].sum(), x)
        touched = {i for i in range(6) if grad[0, i].abs().sum() > 0}
        assert touched == set(inputs), f"C3 map {j}"
    assert sum(len(t) for t in C3_TABLE) == 60


def test_scaled_tanh_maps_plus_minus_one_to_itself() -> None:
    y = scaled_tanh(torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(y, torch.tensor([-1.0, 0.0, 1.0]), atol=1e-4, rtol=0)
    assert scaled_tanh(torch.tensor(1e3)).item() == torch.tensor(1.7159).item()


def test_rbf_output_is_fixed_and_picks_the_nearest_code() -> None:
    m = create_model("lenet5_paper")
    centers = m.output.centers
    assert not any(p is centers for p in m.parameters())  # a buffer: never trained
    assert set(centers.unique().tolist()) == {-1.0, 1.0}
    logits = m.output(centers[[3, 7]])  # an F6 output equal to a class code is closest to that class
    assert logits.argmax(1).tolist() == [3, 7]
    assert "output.centers" in m.state_dict()  # saved with the model so predictions are reproducible
    m.reset_classifier(4)
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 4)


def test_paper_preprocessing_maps_background_and_ink() -> None:
    p = create_model("lenet5_paper").meta.preprocess
    assert (0.0 - p.mean[0]) / p.std[0] == pytest.approx(-0.1)  # background
    assert (1.0 - p.mean[0]) / p.std[0] == pytest.approx(1.175)  # ink
