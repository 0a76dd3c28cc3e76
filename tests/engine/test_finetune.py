"""Fine-tuning: stages per family, what --freeze freezes (BatchNorm statistics included), the
optimizer's groups, --unfreeze-at with exact resume, and the lines a run prints about its head."""

from __future__ import annotations

import re
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


# LeNet-5 on 64 digits, 2 steps an epoch: C1/C3 frozen in epoch 1, everything trains in epoch 2.
RUN = ["--model", "lenet5", "--data", "digits", "--epochs", "2", "--batch-size", "32", "--train-limit", "64", "--val-limit", "32",
       "--workers", "0", "--no-progress", "--lr", "0.05", "--freeze", "features", "--unfreeze-at", "2", "--head-lr-mult", "3",
       "--ema-decay", "0.9"]  # fmt: skip


def _stopped_then_resumed(cli, run: Path, monkeypatch, stop_after: int) -> None:
    with monkeypatch.context() as m:
        m.setattr(_StopAfter, "k", stop_after)
        m.setattr("cnnlab.engine.train.Preemption", _StopAfter)
        r = cli("train", *RUN, "--out", run)
    assert r.code == 143, r.err
    r = cli("train", "--resume", run)
    assert r.code == 0, r.err


def test_unfreeze_at_resumes_bit_identically(cli, tmp_path: Path, monkeypatch) -> None:
    r = cli("train", *RUN, "--out", tmp_path / "straight")
    assert r.code == 0, r.err
    assert "frozen: 2 of 4 stages (features.0, features.3)" in r.out and "they train from epoch 2 on" in r.out
    assert "unfrozen: all 4 stages train from now on" in r.out
    # stopped in epoch 1 (frozen: the resumed run unfreezes), and in epoch 2 (it rebuilds the grown optimizer)
    for stop_after in (1, 3):
        _stopped_then_resumed(cli, tmp_path / f"stop{stop_after}", monkeypatch, stop_after)
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    assert len(a["optimizer"]["param_groups"]) == 6  # 4 at the start, 2 more for C1/C3
    for stop_after in (1, 3):
        b = torch.load(tmp_path / f"stop{stop_after}" / "checkpoints" / "last.pt", weights_only=True)
        assert b["optimizer"]["param_groups"] == a["optimizer"]["param_groups"]
        for part in ("model", "ema"):
            for key, value in a[part].items():
                assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resume (stopped after step {stop_after})"
        for pid, st in a["optimizer"]["state"].items():
            assert torch.equal(st["momentum_buffer"], b["optimizer"]["state"][pid]["momentum_buffer"])
        assert a["scheduler"]["base_lrs"] == b["scheduler"]["base_lrs"]


def test_a_class_count_change_replaces_the_head_and_says_so(tmp_path: Path) -> None:
    from cnnlab.engine.checkpoint import load_weights, start_weights

    src = create_model("resnet20", num_classes=10, in_chans=3)
    torch.save(src.state_dict(), tmp_path / "r20.pt")
    model = create_model("resnet20", num_classes=4, in_chans=3)
    assert start_weights(model, "", str(tmp_path / "r20.pt"))[0] == [
        f"new classifier: fc starts fresh with 4 outputs ({tmp_path / 'r20.pt'} had 10 outputs, not loaded)"]  # fmt: skip
    assert torch.equal(model.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    with pytest.raises(Exception, match="was trained for 10 classes but this model has 4; to fine-tune it on the new classes use --finetune"):
        load_weights(model, src.state_dict(), "r20.pt")
    other = create_model("resnet32", num_classes=4, in_chans=3).state_dict()
    with pytest.raises(Exception, match="different architecture"):
        start_weights(model, "", _save(other, tmp_path / "r32.pt"))


def _save(sd: dict, path: Path) -> str:
    torch.save(sd, path)
    return str(path)


STOP_CFG = """[net]
width=8
height=8
channels=1
[convolutional]
filters=4
size=3
pad=1
batch_normalize=1
activation=leaky
[convolutional]
filters=4
size=3
pad=1
batch_normalize=1
activation=leaky
stopbackward=1
[convolutional]
filters=4
size=3
pad=1
activation=leaky
[convolutional]
filters=3
size=1
activation=linear
[avgpool]
[softmax]
"""


def test_darknet_stopbackward_freezes_it_and_every_layer_before(tmp_path: Path) -> None:
    cfg = tmp_path / "stop.cfg"
    cfg.write_text(STOP_CFG)
    model = create_model(f"darknet:{cfg}", num_classes=3)
    assert [label for label, _ in model.stages()] == ["0 conv", "1 conv", "2 conv"] and model.frozen_by_design() == 2
    tuning = finetune.Finetune.from_config(model, resolve(overrides={"model": f"darknet:{cfg}"}))
    assert tuning.freeze(model).startswith("frozen: 2 of 3 stages (0 conv, 1 conv)")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("net.layers.0.", "net.layers.1."))}
    model(torch.rand(4, 1, 8, 8)).sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(("net.layers.0.", "net.layers.1.")))
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("net.layers.2."))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # BatchNorm statistics kept


def test_darknet_weights_start_a_finetune_with_a_new_classifier_layer(tmp_path: Path) -> None:
    from cnnlab.engine.checkpoint import start_weights

    cfg = tmp_path / "stop.cfg"
    cfg.write_text(STOP_CFG)
    src = create_model(f"darknet:{cfg}", num_classes=3)
    src.net.save_weights(tmp_path / "full.weights")
    src.net.save_weights(tmp_path / "stop.conv.2", upto=2)  # what `cnnlab darknet partial CFG W OUT 2` writes
    for weights, loaded in (("full.weights", 3), ("stop.conv.2", 2)):
        model = create_model(f"darknet:{cfg}", num_classes=5)
        (line,), _ = start_weights(model, "", str(tmp_path / weights))
        assert line.startswith(f"loaded darknet weights {tmp_path / weights}: layers 0-{loaded - 1} of 6; layer 3 [convolutional] is the new classifier (5 outputs)")
        for i in range(loaded):
            for key, value in src.net.layers[i].state_dict().items():
                assert torch.equal(value, model.net.layers[i].state_dict()[key])


def test_darknet_weights_that_are_not_a_backbone_of_the_cfg_are_refused(tmp_path: Path) -> None:
    """darknet reads whatever floats a file holds; a fine-tune must not start from another cfg's
    weights or a truncated file as if they fitted."""
    from cnnlab.engine.checkpoint import start_weights
    from cnnlab.errors import CnnlabError

    cfg = tmp_path / "stop.cfg"
    cfg.write_text(STOP_CFG)
    src = create_model(f"darknet:{cfg}", num_classes=3)
    src.net.save_weights(tmp_path / "full.weights")
    data = (tmp_path / "full.weights").read_bytes()
    (tmp_path / "longer.weights").write_bytes(data + b"\0" * 4 * 7)  # 7 floats more: not a whole class of layer 3
    (tmp_path / "cut.weights").write_bytes(data[:40])  # 20-byte header, then 5 floats: inside layer 0
    wider = create_model(f"darknet:{cfg}", num_classes=9)
    wider.net.save_weights(tmp_path / "nine.weights")  # same backbone, a classifier of 9 classes: fits
    cases = {"longer.weights": "does not fit", "cut.weights": "ends inside layer 0 [convolutional]"}
    for name, says in cases.items():
        with pytest.raises(CnnlabError, match=re.escape(says)):
            start_weights(create_model(f"darknet:{cfg}", num_classes=5), "", str(tmp_path / name))
    (line,), _ = start_weights(create_model(f"darknet:{cfg}", num_classes=5), "", str(tmp_path / "nine.weights"))
    assert "layers 0-2 of 6" in line


def test_frozen_resnet_layers_are_bit_identical_after_finetuning_batchnorm_statistics_included(cli, tmp_path: Path) -> None:
    """Issue 15, acceptance 1: a CIFAR ResNet fine-tuned with its first 3 stages frozen (--freeze 3:
    conv1+bn1, layer1, layer2) ends with those weights and BatchNorm running statistics unchanged."""
    torch.manual_seed(0)
    src = create_model("resnet20", num_classes=10)
    for m in src.modules():  # distinct statistics, so a single update would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(src.state_dict(), tmp_path / "r20.pt")
    r = cli("train", "--model", "resnet20", "--data", "digits", "--classes", "0,1,2", "--finetune", tmp_path / "r20.pt", "--freeze", "3",
            "--epochs", "2", "--batch-size", "16", "--train-limit", "64", "--val-limit", "16", "--workers", "0", "--no-progress",
            "--lr", "0.05", "--out", tmp_path / "ft")  # fmt: skip
    assert r.code == 0, r.err
    assert "new classifier: fc starts fresh with 3 outputs" in r.out
    assert "frozen: 3 of 4 stages (conv1+bn1, layer1, layer2)" in r.out and "BatchNorm layer(s) keep their statistics" in r.out
    after = torch.load(tmp_path / "ft" / "checkpoints" / "last.pt", weights_only=True)["model"]
    before = src.state_dict()
    frozen = [k for k in before if k.startswith(("conv1.", "bn1.", "layer1.", "layer2."))]
    assert any(k.endswith("running_var") for k in frozen)
    for key in frozen:
        assert torch.equal(after[key], before[key]), f"{key} changed"
    assert not torch.equal(after["layer3.0.bn1.running_mean"], before["layer3.0.bn1.running_mean"])  # the rest trained
    assert not torch.equal(after["layer3.0.conv1.weight"], before["layer3.0.conv1.weight"])
    v = cli("valid", "-c", tmp_path / "ft", "--no-progress", "--workers", "0")  # scored on the run's own 3 classes
    assert v.code == 0, v.err
    assert [line.split()[0] for line in v.out.splitlines() if line[:1].isdigit()] == ["0", "1", "2"]


def test_other_trainers_checkpoints_load_through_their_wrapper_and_ddp_prefix(tmp_path: Path) -> None:
    from cnnlab.engine.checkpoint import weights_from

    sd = create_model("lenet5", num_classes=7).state_dict()
    wrapped = {
        "ddp.pt": {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
        "model.pt": {"model": sd, "optimizer": {}},
        "compiled.pt": {f"_orig_mod.{k}": v for k, v in sd.items()},
    }
    for name, obj in wrapped.items():
        torch.save(obj, tmp_path / name)
        got = weights_from(str(tmp_path / name))
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd), name


def test_finetuning_keeps_the_preprocessing_the_start_weights_were_trained_with(cli, tmp_path: Path) -> None:
    """A run started from a cnnlab checkpoint normalises as that checkpoint's run did (its features
    expect it) and says so; --preprocess keys still win; a resumed run keeps what it started with."""
    base = ["--model", "lenet5", "--data", "digits", "--epochs", "1", "--batch-size", "16", "--train-limit", "64",
            "--val-limit", "32", "--workers", "0", "--no-progress"]  # fmt: skip
    r = cli("train", *base, "--preprocess", "{mean: [0.5], std: [0.25]}", "--out", tmp_path / "pre")
    assert r.code == 0, r.err
    r = cli("train", *base, "--finetune", tmp_path / "pre", "--out", tmp_path / "ft")
    assert r.code == 0, r.err
    assert f"preprocessing from {tmp_path / 'pre'} (its weights were trained with it): mean [0.5], std [0.25]" in r.out
    saved = torch.load(tmp_path / "ft" / "checkpoints" / "last.pt", weights_only=True)["preprocess"]
    assert (saved["mean"], saved["std"]) == ([0.5], [0.25])
    r = cli("train", *base, "--finetune", tmp_path / "pre", "--preprocess", "{std: [0.5]}", "--out", tmp_path / "ft2")
    assert r.code == 0 and "(--preprocess keys on top)" in r.out, r.err
    saved = torch.load(tmp_path / "ft2" / "checkpoints" / "last.pt", weights_only=True)["preprocess"]
    assert (saved["mean"], saved["std"]) == ([0.5], [0.5])
    r = cli("train", "--resume", tmp_path / "ft", "--epochs", "2")
    assert r.code == 0, r.err
    saved = torch.load(tmp_path / "ft" / "checkpoints" / "last.pt", weights_only=True)["preprocess"]
    assert (saved["mean"], saved["std"]) == ([0.5], [0.25])


def test_darknet_init_with_another_class_count_points_to_finetune(tmp_path: Path) -> None:
    """It said the weights were "too long for the cfg" and suggested a flag train does not have."""
    from cnnlab.engine.checkpoint import start_weights
    from cnnlab.errors import CnnlabError

    cfg = tmp_path / "stop.cfg"
    cfg.write_text(STOP_CFG)
    create_model(f"darknet:{cfg}", num_classes=9).net.save_weights(tmp_path / "nine.weights")
    with pytest.raises(CnnlabError, match=re.escape(f"use --finetune {tmp_path / 'nine.weights'}")):
        start_weights(create_model(f"darknet:{cfg}", num_classes=5), str(tmp_path / "nine.weights"), "")
