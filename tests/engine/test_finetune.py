"""Fine-tuning: stages per family, what --freeze freezes (BatchNorm statistics included), the
optimizer's groups, --unfreeze-at with exact resume, and the lines a run prints about its head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.config import resolve
from cnnlab.engine import finetune, preemption
from cnnlab.engine.build import build_optimization
from cnnlab.models import create_model, list_models


def _meta_model(name: str):
    with torch.device("meta"):  # stage bookkeeping needs no real weights
        return create_model(name)


@pytest.mark.parametrize("name", list_models())
def test_freeze_n_freezes_exactly_the_first_n_stages_in_forward_order(name: str) -> None:
    model = _meta_model(name)
    stages = model.stages()
    assert 3 <= len(stages) and 0 < model.feature_stages() <= len(stages)
    n = len(stages) // 2
    frozen = finetune.set_frozen(model, finetune.frozen_count(model, str(n)))
    assert frozen == stages[:n]
    frozen_names = [m for _, names in stages[:n] for m in names]
    for pname, p in model.named_parameters():
        inside = any(pname.startswith(m + ".") for m in frozen_names)
        assert p.requires_grad != inside, pname
    head = model.get_classifier()
    assert all(p.requires_grad for p in head.parameters())
    # --freeze features: every stage forward_features runs; the classifier always trains
    assert finetune.frozen_count(model, "features") == model.feature_stages()


def test_stage_names_per_family() -> None:
    labels = {n: [label for label, _ in _meta_model(n).stages()] for n in ("lenet5", "resnet20", "resnet18", "vgg11_bn", "googlenet", "inception_v3")}
    assert labels["lenet5"] == ["features.0", "features.3", "c5", "f6"]
    assert labels["resnet20"] == ["conv1+bn1", "layer1", "layer2", "layer3"]
    assert labels["resnet18"] == ["conv1+bn1", "layer1", "layer2", "layer3", "layer4"]
    assert labels["vgg11_bn"][:2] == ["features.0+1", "features.4+5"] and labels["vgg11_bn"][-2:] == ["classifier.0", "classifier.3"]
    assert labels["googlenet"][0] == "conv1" and labels["googlenet"][-1] == "inception5b" and "aux1" not in labels["googlenet"]
    assert "AuxLogits" not in labels["inception_v3"] and labels["inception_v3"][-1] == "Mixed_7c"
    assert _meta_model("lenet5").feature_stages() == 2 and _meta_model("vgg11").feature_stages() == 8


def test_freeze_errors_name_the_fix() -> None:
    model = _meta_model("resnet20")
    with pytest.raises(Exception, match="resnet20 has 4 stages before its classifier"):
        finetune.frozen_count(model, "9")
    with pytest.raises(Exception, match="--freeze takes a number of stages or 'features'"):
        resolve(overrides={"freeze": "conv"})
    with pytest.raises(Exception, match="--unfreeze-at needs frozen stages"):
        finetune.Finetune.from_config(model, resolve(overrides={"unfreeze_at": 3}))


def test_frozen_batchnorm_stays_in_eval_mode_through_train() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=3)
    finetune.set_frozen(model, 2)  # conv1+bn1, layer1
    model.train()
    assert not model.bn1.training and not model.layer1[0].bn1.training and model.layer2[0].bn1.training
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("bn1.", "layer1."))}
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # running stats untouched
    assert model.conv1.weight.grad is None and model.layer2[0].conv1.weight.grad is not None


def test_head_lr_mult_and_layer_decay_make_one_group_per_lr() -> None:
    model = create_model("lenet5", num_classes=5)
    cfg = resolve(overrides={"freeze": "2", "head_lr_mult": 10, "lr": 0.01, "weight_decay": 1e-4})
    finetune.Finetune.from_config(model, cfg).freeze(model)
    optimizer, _ = build_optimization(model, cfg, steps_per_epoch=10)
    groups = {(g["lr_scale"], g["weight_decay"]): {id(p) for p in g["params"]} for g in optimizer.param_groups}
    ids = lambda *ps: {id(p) for p in ps}  # noqa: E731
    assert groups == {
        (1.0, 1e-4): ids(model.c5.weight, model.f6.weight),
        (1.0, 0.0): ids(model.c5.bias, model.f6.bias),
        (10.0, 1e-4): ids(model.fc.weight),
        (10.0, 0.0): ids(model.fc.bias),
    }  # the frozen C1/C3 are in no group: no update, no weight decay
    assert {g["lr_scale"]: g["lr"] for g in optimizer.param_groups} == {1.0: 0.01, 10.0: pytest.approx(0.1)}

    cfg = resolve(overrides={"layer_decay": 0.5, "lr": 0.1})
    scales = finetune.lr_scales(create_model("lenet5"), cfg.head_lr_mult, cfg.layer_decay)
    assert (scales["features.0.weight"], scales["features.3.weight"], scales["c5.weight"], scales["f6.weight"], scales["fc.weight"]) == (
        0.0625, 0.125, 0.25, 0.5, 1.0)  # fmt: skip


def test_unfreeze_adds_groups_on_the_same_schedule() -> None:
    model = create_model("lenet5", num_classes=5)
    cfg = resolve(overrides={"freeze": "features", "unfreeze_at": 2, "lr": 0.1, "sched": "cosine", "epochs": 2})
    tuning = finetune.Finetune.from_config(model, cfg)
    tuning.freeze(model)
    optimizer, scheduler = build_optimization(model, cfg, steps_per_epoch=4)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    line = tuning.unfreeze(model, optimizer, scheduler, cfg)
    assert line.startswith("unfrozen: all 4 stages train from now on")
    assert all(p.requires_grad for p in model.parameters()) and not model.frozen
    assert len({g["lr"] for g in optimizer.param_groups}) == 1  # the new groups sit at the schedule's current lr
    scheduler.step()
    assert len(set(scheduler.get_last_lr())) == 1 and len(scheduler.base_lrs) == len(optimizer.param_groups)


class _StopAfter(preemption.Preemption):
    """SIGTERM as if it arrived after optimizer step ``k`` (deterministic, unlike a real signal)."""

    k = 0

    def __init__(self) -> None:
        self.reads = 0
        super().__init__()

    @property
    def requested(self) -> bool:  # read once per optimizer step
        self.reads += 1
        return self.reads > self.k

    @requested.setter
    def requested(self, value: bool) -> None:
        pass


# LeNet-5 on 128 digits, 4 steps an epoch: C1/C3 frozen in epoch 1, everything trains from epoch 2.
RUN = ["--model", "lenet5", "--data", "digits", "--epochs", "3", "--batch-size", "32", "--train-limit", "128", "--val-limit", "64",
       "--workers", "0", "--no-progress", "--lr", "0.05", "--freeze", "features", "--unfreeze-at", "2", "--head-lr-mult", "3",
       "--ema-decay", "0.9"]  # fmt: skip


@pytest.mark.parametrize("stop_after", [2, 6])  # mid-epoch 1 (frozen), mid-epoch 2 (unfrozen, more groups)
def test_unfreeze_at_resumes_bit_identically(cli, tmp_path: Path, monkeypatch, stop_after: int) -> None:
    r = cli("train", *RUN, "--out", tmp_path / "straight")
    assert r.code == 0, r.err
    assert "frozen: 2 of 4 stages (features.0, features.3)" in r.out and "they train from epoch 2 on" in r.out
    assert "unfrozen: all 4 stages train from now on" in r.out
    with monkeypatch.context() as m:
        m.setattr(_StopAfter, "k", stop_after)
        m.setattr(preemption, "Preemption", _StopAfter)
        m.setattr("cnnlab.engine.train.Preemption", _StopAfter)
        r = cli("train", *RUN, "--out", tmp_path / "stopped")
    assert r.code == 143, r.err
    r = cli("train", "--resume", tmp_path / "stopped")
    assert r.code == 0, r.err
    a, b = (torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=True) for run in ("straight", "stopped"))
    assert len(a["optimizer"]["param_groups"]) == len(b["optimizer"]["param_groups"]) == 6  # 4 at the start, 2 for C1/C3
    for part in ("model", "ema"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resume"
    for pid, st in a["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], b["optimizer"]["state"][pid]["momentum_buffer"])
    assert a["scheduler"]["base_lrs"] == b["scheduler"]["base_lrs"]
