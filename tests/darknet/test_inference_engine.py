"""The inference engine on darknet nets: the folded, packed fp32 network gives darknet's outputs within
the reference tolerance on every reference run; bf16 keeps the top-1 of real images; the commands
skip, count and report unreadable images in a stream."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.darknet import load_darknet
from cnnlab.darknet.layers import Convolutional
from cnnlab.darknet.preprocess import load_image, preprocess
from cnnlab.darknet.programs import classifier_predict, classifier_valid
from cnnlab.engine import kernel_choice, winograd
from cnnlab.engine.inference import InferenceModel, InferenceOptions, bf16_supported, prepare
from cnnlab.engine.packed_conv import DARKNET_TILES, PackedConv2d
from cnnlab.engine.winograd import WinogradConv2d
from cnnlab.threads import one_thread

from .refdata import REF, Run, all_runs
from .test_reference import ATOL, STORED_RTOL

RUNS = all_runs()
CPU = torch.device("cpu")


@lru_cache(maxsize=2)
def _engine(cfg_name: str, flavor: str, weights: Path, precision: str = "fp32") -> tuple[InferenceModel, object]:
    net = load_darknet(REF / "cfg" / f"{cfg_name}.cfg", weights, flavor)
    return prepare(net, (net.channels, net.height, net.width), CPU, InferenceOptions(precision=precision), log=io.StringIO()), net


@pytest.mark.parametrize("run", RUNS, ids=[r.id for r in RUNS])
def test_engine_gives_darknets_outputs(run: Run, weights_for) -> None:
    engine, net = _engine(run.cfg_name, run.flavor, weights_for(run.cfg_name))
    out = engine(torch.from_numpy(run.input()))
    got = (out[-1] if isinstance(out, list) else out).flatten().numpy()
    np.testing.assert_allclose(got, run.output(), rtol=STORED_RTOL, atol=ATOL, err_msg=f"{run.id}: network output")


@pytest.mark.parametrize("run", RUNS, ids=[r.id for r in RUNS])
def test_winograd_everywhere_still_gives_darknets_outputs(run: Run, weights_for, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which convolutions run as Winograd is timed at prepare; with every eligible one forced to it
    (F(2×2), the only tile darknet nets take) the outputs still hold the reference tolerance."""
    assert DARKNET_TILES == (2,)
    monkeypatch.setattr(kernel_choice, "choose", lambda seconds, handicaps: "winograd2")
    net = load_darknet(REF / "cfg" / f"{run.cfg_name}.cfg", weights_for(run.cfg_name), run.flavor)
    with one_thread():  # Winograd is offered where layers run on one thread
        engine = prepare(net, (net.channels, net.height, net.width), CPU, log=io.StringIO())
    eligible = [m for m in net.modules() if winograd.eligible(m)]
    assert sum(isinstance(m, WinogradConv2d) for m in engine.modules()) == len(eligible)
    out = engine(torch.from_numpy(run.input()))
    got = (out[-1] if isinstance(out, list) else out).flatten().numpy()
    np.testing.assert_allclose(got, run.output(), rtol=STORED_RTOL, atol=ATOL, err_msg=f"{run.id}: network output")


def test_engine_folds_once_and_leaves_the_model_alone(weights_for) -> None:
    net = load_darknet(REF / "cfg" / "darknet.cfg", weights_for("darknet"))
    before = {k: v.clone() for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)}
    engine = prepare(net, (3, net.height, net.width), CPU)
    convs = [m for m in engine.inner.modules() if isinstance(m, Convolutional)]
    assert convs and all(m.bn is None for m in convs)  # folded at prepare, never again in forward
    assert all(isinstance(m.conv, (PackedConv2d, WinogradConv2d)) for m in convs)
    assert all(m.bn is not None for m in net.modules() if isinstance(m, Convolutional) and m.bn_enabled)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.skipif(not bf16_supported(CPU), reason="this CPU has no native bf16")
@pytest.mark.parametrize("flavor", ["pjreddie", "alexeyab"])
def test_bf16_keeps_the_top1_of_real_images(flavor: str, weights_for) -> None:
    net = load_darknet(REF / "cfg" / "darknet.cfg", weights_for("darknet"), flavor)
    bf16 = prepare(net, (3, net.height, net.width), CPU, InferenceOptions(precision="bf16"), log=io.StringIO())
    images = sorted((REF / "images").glob("*.png"))
    x = torch.from_numpy(np.stack([preprocess(load_image(p), net.width, net.height, flavor, "classify") for p in images]))
    with torch.no_grad():
        want = net(x)
    got = bf16(x)
    assert got.dtype == torch.float32
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert torch.allclose(got, want, atol=0.03)


def _bad_list(tmp_path: Path) -> tuple[Path, list[str]]:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image\n")
    good = [str(REF / "images" / n) for n in ("img1_500x375.png", "img2_224x224.png", "img3_640x480.png")]
    return bad, [good[0], str(bad), good[1], str(tmp_path / "missing.png"), good[2]]


def test_predict_on_stdin_skips_counts_and_reports_bad_images(weights_for, tmp_path: Path, monkeypatch) -> None:
    bad, paths = _bad_list(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(p + "\n" for p in paths) + "\n  \n"))  # blank lines are no answer
    out, err = io.StringIO(), io.StringIO()
    code = classifier_predict(data=str(REF / "data/classify40.data"), cfg=str(REF / "cfg/oracle-mini-pj.cfg"),
                              weights=str(weights_for("oracle-mini-pj")), top=1, out=out, err=err)  # fmt: skip
    assert code == 1
    shown = [line.split(":")[0] for line in err.getvalue().splitlines() if "Predicted in" in line]
    assert shown == [paths[0], paths[2], paths[4]]  # every good image once, in order
    assert f"{bad}: skipped:" in err.getvalue() and "missing.png: skipped:" in err.getvalue()
    assert "skipped 2 of 5 image(s)" in err.getvalue()


def test_valid_skips_counts_and_reports_bad_images(weights_for, tmp_path: Path) -> None:
    _, paths = _bad_list(tmp_path)
    (tmp_path / "valid.list").write_text("".join(p + "\n" for p in paths))
    names = (REF / "data" / "oracle40.names").read_text()
    (tmp_path / "names.list").write_text(names)
    data = tmp_path / "v.data"
    data.write_text(f"classes=40\nvalid={tmp_path / 'valid.list'}\nnames={tmp_path / 'names.list'}\ntop=5\n")
    out, err = io.StringIO(), io.StringIO()
    code = classifier_valid(data=str(data), cfg=str(REF / "cfg/oracle-mini-pj.cfg"), weights=str(weights_for("oracle-mini-pj")),
                            options=InferenceOptions(batch=2), out=out, err=err)  # fmt: skip
    assert code == 1
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["0", "1", "2"]
    assert "skipped 2 of 5 image(s)" in err.getvalue()
