"""Trainability (a few SGD steps on each family's smallest variant at its input size), auxiliary
heads, and ResNet shortcut options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.models import create_model
from cnnlab.models.layers import aux_loss

# The smallest variant of each family file (lenet5_paper too: its layers are all custom).
SMALLEST = [
    "lenet5", "lenet5_paper", "alexnet", "vgg11", "googlenet", "inception_v3", "inception_resnet_v1", "resnet20",
]  # fmt: skip


@pytest.mark.parametrize("name", SMALLEST)
def test_sgd_steps_update_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).train()
    x = torch.randn(2, *model.meta.preprocess.input_size)
    y = torch.tensor([1, 3])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    for _ in range(2):
        optimizer.zero_grad()
        logits = model(x)
        assert logits.shape == (2, 5)
        loss = criterion(logits, y) + aux_loss(model, criterion, y)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, f"not updated: {unchanged[:5]}"


@pytest.mark.parametrize(("name", "heads"), [("googlenet", 2), ("inception_v3", 1)])
def test_aux_heads_run_in_training_only(name: str, heads: int) -> None:
    model = create_model(name, num_classes=3)
    x = torch.randn(2, *model.meta.preprocess.input_size)
    with torch.no_grad():
        model.train()
        main = model(x)
        outs = model.aux_outputs()
        assert len(outs) == heads and all(a.shape == main.shape for _, a in outs)
        assert float(aux_loss(model, nn.CrossEntropyLoss(), torch.tensor([0, 2]))) > 0
        model.eval()
        model(x[:1])
        assert model.aux_outputs() == [] and aux_loss(model, nn.CrossEntropyLoss(), torch.tensor([0])) == 0.0
    plain = create_model(name, aux_logits=False)
    assert not any(n.lower().startswith("aux") for n, _ in plain.named_modules() if n)


def test_aux_loss_is_zero_for_models_without_heads() -> None:
    model = create_model("resnet20").train()
    model(torch.randn(2, 3, 32, 32))
    assert aux_loss(model, nn.CrossEntropyLoss(), torch.tensor([0, 1])) == 0.0


def test_resnet_shortcut_options() -> None:
    counts = {opt: sum(p.numel() for p in create_model("resnet34", shortcut=opt).parameters()) for opt in "ABC"}
    assert counts["B"] == 21_797_672
    assert counts["A"] < counts["B"] < counts["C"]
    # A: the three shape-changing shortcuts lose their 1×1 projections (+BN).
    proj = sum(c_in * c_out + 2 * c_out for c_in, c_out in ((64, 128), (128, 256), (256, 512)))
    assert counts["B"] - counts["A"] == proj
    model = create_model("resnet34", shortcut="A").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_googlenet_paper_is_table_1() -> None:
    from cnnlab.models.summary import summarize

    model = create_model("googlenet_paper")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.modules()) == 2
    five = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (5, 5)]
    assert len(five) == 9  # one 5×5 branch per inception module
    s = summarize(model, (3, 224, 224))
    assert s.macs / 1e9 == pytest.approx(1.5, abs=0.1)  # section 5: "1.5 billion multiply-adds"
