"""``cnnlab darknet convert`` and darknet cfgs inside cnnlab's own commands (train, valid, predict, summary)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab.cli import main
from cnnlab.darknet import load_darknet
from cnnlab.darknet.classifier import DarknetClassifier, create_darknet_classifier
from cnnlab.data.transforms import Letterbox, eval_transform
from cnnlab.engine import checkpoint as ckpt_mod
from cnnlab.errors import CnnlabError
from cnnlab.models import Preprocess, create_model
from torchvision.transforms import InterpolationMode

from .refdata import REF, expected_text

# 10 outputs so that scikit-learn's digits (classes "0".."9") train it without changing the cfg
SMALL = """[net]
batch=16
subdivisions=2
width=16
height=16
channels=3
learning_rate=0.05
momentum=0.9
decay=0.0005
policy=steps
steps=4,8
scales=.5,.5
max_batches=6

# a comment, kept in the checkpoint's copy of the cfg
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=10
size=1
stride=1
activation=linear

[avgpool]

[softmax]
groups=1

[cost]
type=sse
"""


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    c = capsys.readouterr()
    return code, c.out, c.err


def test_forward_is_log_of_darknet_output_so_cross_entropy_is_darknets_loss() -> None:
    model = DarknetClassifier(SMALL.replace("groups=1", "groups=2\ntemperature=2"), source="small.cfg").eval()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        logp, probs = model(x), model.net(x)
    torch.testing.assert_close(logp.exp(), probs)  # darknet's softmax (groups, temperature) in log space
    y = torch.tensor([0, 3, 7, 9])
    torch.testing.assert_close(F.cross_entropy(logp, y), -probs.log()[torch.arange(4), y].mean() + torch.log(torch.tensor(2.0)))
    plain = DarknetClassifier(SMALL).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x).softmax(1), plain.net(x))  # what cnnlab predict prints = darknet's probabilities


def test_classes_from_the_data_rewrite_only_the_classifier_line(capsys) -> None:
    model = DarknetClassifier(SMALL, source="small.cfg", num_classes=4)
    assert model.num_classes == 4 and model.meta.classifier == "net.layers.3"
    assert "gets 4 outputs (the cfg has 10)" in capsys.readouterr().err
    text = model.meta.extra["builder_kwargs"]["cfg_text"]
    assert text.splitlines() == SMALL.replace("filters=10", "filters=4").splitlines()
    model.reset_classifier(3)
    assert model.num_classes == 3 and model(torch.rand(2, 3, 16, 16)).shape == (2, 3)
    with pytest.raises(CnnlabError, match="detector"):
        DarknetClassifier(SMALL.split("[avgpool]")[0] + "[yolo]\nmask=0\nanchors=1,1\nclasses=5\n")


def test_preprocess_follows_the_flavor_and_old_checkpoints_keep_short_side() -> None:
    pj = DarknetClassifier(SMALL).meta.preprocess
    ab = DarknetClassifier(SMALL, flavor="alexeyab").meta.preprocess
    assert (pj.resize_mode, ab.resize_mode, ab.resize) == ("letterbox", "short", 16)
    assert pj.mean == (0.0,) * 3 and pj.std == (1.0,) * 3  # darknet feeds x/255
    d = pj.to_dict()
    del d["resize_mode"]
    assert Preprocess.from_dict(d).resize_mode == "short"
    with pytest.raises(ValueError, match="resize_mode"):
        Preprocess((3, 4, 4), (0,) * 3, (1,) * 3, 4, resize_mode="stretch")


def test_letterbox_transform_uses_darknets_geometry() -> None:
    img = torch.full((3, 375, 500), 7, dtype=torch.uint8)  # wide: width fills, height 375·224//500 = 168
    out = Letterbox(224, 224, InterpolationMode.BILINEAR)(img)
    assert out.shape == (3, 224, 224)
    rows = (out[0, :, 100] == 7).nonzero().flatten()
    assert (rows.min().item(), rows.max().item()) == (28, 28 + 168 - 1)  # offset (224-168)//2
    assert out[0, 0, 0] == 128 and out[0, -1, -1] == 128
    pre = DarknetClassifier(SMALL).meta.preprocess
    assert eval_transform(pre)(torch.zeros(1, 8, 32, dtype=torch.uint8)).shape == (3, 16, 16)  # grey → RGB too


def test_summary_prints_darknets_layer_table(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL)
    code, out, _ = cli(capsys, "summary", f"darknet:{cfg}")
    assert code == 0
    table = load_darknet(cfg).layer_table().splitlines()
    lines = out.splitlines()
    assert lines[1 : 1 + len(table)] == table
    assert re.fullmatch(r"Total BFLOPS \d+\.\d{3}", lines[-2]) and lines[-1] == f"parameters {sum(p.numel() for p in load_darknet(cfg).parameters()):,}"
    code, _, err = cli(capsys, "summary", f"darknet:{cfg}", "--input", "3x32x32")
    assert code == 2 and "edit the cfg" in err
    code, _, err = cli(capsys, "summary", f"darknet:{tmp_path / 'missing.cfg'}")
    assert code == 2 and "cannot read cfg" in err


def test_convert_then_cnnlab_predict_prints_darknets_top5(capsys, weights_for, tmp_path: Path) -> None:
    out = tmp_path / "tiny.pt"
    args = ["darknet", "convert", REF / "cfg/tiny.cfg", weights_for("tiny"), out, "--data", REF / "data/classify1k.data"]
    code, text, err = cli(capsys, *args)
    assert code == 0, err
    assert "1000 classes" in text and "letterbox to 224x224" in text
    ckpt = ckpt_mod.load(out)
    assert ckpt["classes"][:2] == ["class_000", "class_001"] and ckpt["arch"]["kwargs"]["cfg_text"] == (REF / "cfg/tiny.cfg").read_text()
    # img2 is 224x224: no resize, so cnnlab predict gives darknet's numbers exactly (the .weights header rides along)
    code, text, err = cli(capsys, "predict", "-c", out, REF / "images/img2_224x224.png", "--device", "cpu")
    assert code == 0, err
    want = expected_text("pjreddie/tiny/img2_224x224.png", "cli.stdout").splitlines()
    assert text.splitlines()[1:] == want
    # refuses to overwrite without --force, one line each
    code, _, err = cli(capsys, *args)
    assert code == 2 and "already exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert cli(capsys, *args, "--force")[0] == 0
    # names that do not fit, and detectors, are one-line errors
    names = tmp_path / "three.names"
    names.write_text("a\nb\nc\n")
    code, _, err = cli(capsys, "darknet", "convert", REF / "cfg/tiny.cfg", weights_for("tiny"), tmp_path / "x.pt", "--names", names)
    assert code == 2 and "3 class names" in err and "1000" in err
    code, _, err = cli(capsys, "darknet", "convert", REF / "cfg/yolov3-tiny.cfg", weights_for("yolov3-tiny"), tmp_path / "y.pt")
    assert code == 2 and "detector" in err
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_converted_checkpoint_in_cnnlab_valid(capsys, weights_for, tmp_path: Path) -> None:
    pt = tmp_path / "tiny.pt"
    assert cli(capsys, "darknet", "convert", REF / "cfg/tiny.cfg", weights_for("tiny"), pt, "--data", REF / "data/classify1k.data")[0] == 0
    # darknet's top-1 is class_212 for both images (expected/pjreddie/tiny): one right, one wrong
    for split in ("train", "val"):
        for label, image in (("class_212", "img2_224x224.png"), ("class_191", "img1_500x375.png")):
            (tmp_path / "data" / split / label).mkdir(parents=True)
            shutil.copy(REF / "images" / image, tmp_path / "data" / split / label / image)
    code, out, err = cli(capsys, "valid", "-c", pt, "--data", tmp_path / "data", "--workers", "0", "--no-progress", "--device", "cpu",
                         "--json", tmp_path / "v.json")  # fmt: skip
    assert code == 0, err
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["top1"] == pytest.approx(50.0) and doc["top5"] == pytest.approx(100.0)


def test_train_darknet_cfg_from_converted_weights_loss_decreases(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL)
    torch.manual_seed(0)
    load_darknet(cfg).save_weights(tmp_path / "small.weights")  # PyTorch's initial values as darknet .weights
    names = tmp_path / "digits.names"
    names.write_text("".join(f"{i}\n" for i in range(10)))
    pt = tmp_path / "small.pt"
    assert cli(capsys, "darknet", "convert", cfg, tmp_path / "small.weights", pt, "--names", names)[0] == 0
    run = tmp_path / "run"
    code, out, err = cli(
        capsys, "train", "--model", f"darknet:{cfg}", "--init", pt, "--data", "digits", "--epochs", "3", "--batch-size", "16",
        "--train-limit", "320", "--val-limit", "32", "--workers", "0", "--no-progress", "--lr", "0.05", "--crop", "center",
        "--out", run,
    )  # fmt: skip
    assert code == 0, err
    losses = [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses[0] < 2.5 and losses[2] < losses[0] - 0.1, losses  # starts near ln 10 and goes down
    # the checkpoint rebuilds without the cfg file, and its weights go back to darknet .weights
    cfg.unlink()
    ckpt = ckpt_mod.load(run)
    model, classes, pre = ckpt_mod.model_from_checkpoint(ckpt)
    assert classes == [str(i) for i in range(10)] and pre.resize_mode == "letterbox"
    model.net.save_weights(tmp_path / "trained.weights")
    back = load_darknet(SMALL, tmp_path / "trained.weights")
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model.eval().net(x))
    from PIL import Image

    Image.new("L", (8, 8), 200).save(tmp_path / "digit.png")
    code, out, err = cli(capsys, "predict", "-c", run, tmp_path / "digit.png")
    assert code == 0 and len(out.splitlines()) == 6, err


def test_create_model_needs_a_cfg() -> None:
    with pytest.raises(CnnlabError, match="darknet:PATH.cfg"):
        create_darknet_classifier("darknet:", cfg_text=None)
    with pytest.raises(CnnlabError, match="cannot read cfg"):
        create_model("darknet:/nowhere/x.cfg")


def test_darknet_run_resumes_to_the_same_weights(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL)
    common = ["--model", f"darknet:{cfg}", "--data", "digits", "--batch-size", "16", "--train-limit", "96", "--val-limit", "16",
              "--workers", "0", "--no-progress", "--lr", "0.05", "--sched", "constant", "--amp", "off"]  # fmt: skip
    assert cli(capsys, "train", *common, "--epochs", "2", "--out", tmp_path / "straight")[0] == 0
    assert cli(capsys, "train", *common, "--epochs", "1", "--out", tmp_path / "cut")[0] == 0
    code, _, err = cli(capsys, "train", "--resume", tmp_path / "cut", "--epochs", "2")
    assert code == 0, err
    a = ckpt_mod.load(tmp_path / "straight/checkpoints/last.pt")["model"]
    b = ckpt_mod.load(tmp_path / "cut/checkpoints/last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k


def test_features_and_head_compose_to_forward() -> None:
    model = DarknetClassifier(SMALL).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 32, 8, 8)  # the layer before the classifier conv
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 32 * 8 * 8)


def test_resume_uses_the_cfg_stored_in_the_checkpoint(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL)
    common = ["--model", f"darknet:{cfg}", "--data", "digits", "--batch-size", "16", "--train-limit", "32", "--val-limit", "16",
              "--workers", "0", "--no-progress", "--epochs", "1"]  # fmt: skip
    assert cli(capsys, "train", *common, "--out", tmp_path / "run")[0] == 0
    shapes = {k: tuple(v.shape) for k, v in ckpt_mod.load(tmp_path / "run/checkpoints/last.pt")["model"].items() if isinstance(v, torch.Tensor)}
    cfg.write_text(SMALL.replace("filters=32", "filters=24"))  # edited while the run could still be resumed
    code, _, err = cli(capsys, "train", "--resume", tmp_path / "run", "--epochs", "2")
    assert code == 0, err
    resumed = ckpt_mod.load(tmp_path / "run/checkpoints/last.pt")
    assert resumed["train_state"]["epoch"] == 2
    assert {k: tuple(v.shape) for k, v in resumed["model"].items() if isinstance(v, torch.Tensor)} == shapes
    # The edited cfg is another network: starting it from the run's weights is one clear line.
    code, _, err = cli(capsys, "train", *common, "--init", tmp_path / "run", "--out", tmp_path / "other")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
