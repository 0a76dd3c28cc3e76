"""darknet's commands through cnnlab: identical top-5 lines, identical detections, darknet's layer table."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.darknet import load_darknet
from cnnlab.darknet.detect import network_boxes, nms_sort
from cnnlab.darknet.preprocess import load_image, preprocess
from cnnlab.darknet.programs import classifier_predict, classifier_valid, detector_test
from cnnlab.errors import CnnlabError

from .refdata import REF, Run, all_runs, expected_text, read_dets

PNG_RUNS = [r for r in all_runs() if r.image.endswith(".png")]
CLS_RUNS = [r for r in PNG_RUNS if not r.is_detector]
DET_RUNS = [r for r in PNG_RUNS if r.is_detector]
TIMING = re.compile(r"Predicted in")


def _data_for(classes: int, detector: bool) -> str:
    for p in sorted((REF / "data").glob("*.data")):
        text = p.read_text()
        if f"classes={classes}\n" in text + "\n" and (("detect" in p.name) == detector):
            return f"data/{p.name}"
    raise AssertionError(f"no .data file with classes={classes}")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not TIMING.search(line)]


def _table(text: str) -> list[str]:
    return [line for line in _lines(text) if not line.startswith("Loading weights")]


@pytest.mark.parametrize("run", CLS_RUNS, ids=[r.id for r in CLS_RUNS])
def test_classifier_predict_prints_what_darknet_prints(run: Run, weights_for, monkeypatch) -> None:
    monkeypatch.chdir(REF)  # darknet resolves names= relative to the working directory
    out, err = io.StringIO(), io.StringIO()
    data = _data_for(int(run.meta["net_outputs"]), detector=False)
    classifier_predict(
        data=data, cfg=f"cfg/{run.cfg_name}.cfg", weights=str(weights_for(run.cfg_name)), image=f"images/{run.image}", top=5,
        flavor=run.flavor, out=out, err=err,
    )
    want = run.text("cli.stdout")
    if run.flavor == "pjreddie":
        assert _lines(out.getvalue()) == _lines(want)
        assert _table(err.getvalue()) == _table(run.text("cli.stderr"))
    else:
        pat = re.compile(r"^class_\d+: ")
        assert [l for l in out.getvalue().splitlines() if pat.match(l)] == [l for l in want.splitlines() if pat.match(l)]


@pytest.mark.parametrize("run", DET_RUNS, ids=[r.id for r in DET_RUNS])
def test_detector_test_prints_what_darknet_prints(run: Run, weights_for, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(REF)
    out, err = io.StringIO(), io.StringIO()
    letter = run.net.endswith("-letterbox")
    detector_test(
        data="data/detect80.data", cfg=f"cfg/{run.cfg_name}.cfg", weights=str(weights_for(run.cfg_name)), image=f"images/{run.image}",
        thresh=float(run.meta["thresh"]), out_name=str(tmp_path / "pred"), flavor=run.flavor,
        letter_box=letter, ext_output=True, out=out, err=err,
    )
    want = run.text("cli.stdout")
    if run.flavor == "pjreddie":
        assert _lines(out.getvalue()) == _lines(want)
        assert _table(err.getvalue()) == _table(run.text("cli.stderr"))
    else:
        pat = re.compile(r"^class_\d+: +\d+%")
        assert sorted(l for l in out.getvalue().splitlines() if pat.match(l)) == sorted(l for l in want.splitlines() if pat.match(l))
    with Image.open(tmp_path / "pred.png") as im:
        w, h = (int(v) for v in run.meta["image_whc"].split()[:2])
        assert im.size == (w, h)


@pytest.mark.parametrize("run", DET_RUNS, ids=[r.id for r in DET_RUNS])
def test_detections_before_and_after_nms_match(run: Run, weights_for) -> None:
    model = load_darknet(REF / "cfg" / f"{run.cfg_name}.cfg", weights_for(run.cfg_name), run.flavor)
    im = load_image(REF / "images" / run.image)
    letter = run.meta.get("letter", "1") == "1"
    x = preprocess(im, model.width, model.height, run.flavor, "detect", letter_box=letter)
    with torch.no_grad():
        outs = model(torch.from_numpy(x)[None])
    raw = network_boxes(model, outs, im.shape[2], im.shape[1], float(run.meta["thresh"]), letter)
    kind = run.meta.get("nms_kind", "default")
    final = nms_sort(raw, float(run.meta["nms"]), "greedynms" if "diou" in kind or "greedy" in kind else "default")
    for dets, name in ((raw, "dets_raw.tsv"), (final, "dets_nms.tsv")):
        want = read_dets(run.text(name))
        assert len(dets) == len(want) == int(run.meta["nboxes"])
        for i, (row, probs) in enumerate(want):
            got = np.r_[dets.boxes[i], dets.objectness[i]]
            np.testing.assert_allclose(got, row, rtol=1e-4, atol=1e-5, err_msg=f"{name} row {i}")
            nz = {int(j): float(dets.probs[i, j]) for j in np.nonzero(dets.probs[i])[0]}
            assert set(nz) == set(probs), f"{name} row {i}: classes {sorted(nz)} != {sorted(probs)}"
            np.testing.assert_allclose([nz[j] for j in probs], list(probs.values()), rtol=1e-4, atol=1e-5)


def test_cli_entry_point_and_errors(weights_for, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REF)
    w = str(weights_for("darknet"))
    rc = main(["darknet", "classifier", "predict", "data/classify1k.data", "cfg/darknet.cfg", w, "images/img2_224x224.png", "-t", "3"])
    assert rc == 0
    got = capsys.readouterr().out.splitlines()
    want = expected_text("pjreddie/darknet/img2_224x224.png", "cli.stdout").splitlines()[:3]
    assert got == want
    # a .data whose classes do not match the network: one clear line, exit 2
    rc = main(["darknet", "classifier", "predict", "data/classify40.data", "cfg/darknet.cfg", w, "images/img2_224x224.png"])
    assert rc == 2
    msg = capsys.readouterr().err
    assert "classes=40" in msg and "1000" in msg and "Traceback" not in msg
    # a weights file for another cfg: names the first layer that does not fit and both sizes
    rc = main(["darknet", "classifier", "predict", "data/classify1k.data", "cfg/darknet.cfg", str(weights_for("tiny")), "images/img2_224x224.png"])
    assert rc == 2
    msg = capsys.readouterr().err
    assert "layer" in msg and "floats" in msg and "--allow-partial" in msg


def test_classifier_valid_uses_exact_folder_names(weights_for, tmp_path: Path) -> None:
    # labels are folder names; 'class_00' must not match 'class_001' as darknet's substring search does
    names = [f"class_{i:03d}" for i in range(40)]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    src = REF / "images"
    paths = []
    for label, image in (("class_036", "img1_500x375.png"), ("class_012", "img2_224x224.png"), ("class_003", "img3_640x480.png")):
        d = tmp_path / "val" / label
        d.mkdir(parents=True)
        (d / image).write_bytes((src / image).read_bytes())
        paths.append(str(d / image))
    (tmp_path / "valid.txt").write_text("\n".join(paths) + "\n")
    data = tmp_path / "v.data"
    data.write_text(f"classes=40\nlabels={tmp_path / 'labels.txt'}\nvalid={tmp_path / 'valid.txt'}\ntop=5\n")
    out = io.StringIO()
    classifier_valid(
        data=str(data), cfg=str(REF / "cfg/oracle-mini-pj.cfg"), weights=str(weights_for("oracle-mini-pj")), out=out, err=io.StringIO()
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    # predict's top-1 for img1 is class_036 (expected/pjreddie/oracle-mini-pj), so the first image is right
    assert lines[0] == "0: top 1: 1.000000, top 5: 1.000000"
    assert all(re.fullmatch(r"\d+: top 1: [01]\.\d{6}, top 5: [01]\.\d{6}", l) for l in lines)


def test_unknown_flavor_and_missing_names_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="flavor"):
        load_darknet(REF / "cfg" / "tiny.cfg", flavor="opencv")
    data = tmp_path / "x.data"
    data.write_text("classes=1000\nnames=nowhere.names\n")
    with pytest.raises(CnnlabError, match="names"):
        classifier_predict(
            data=str(data), cfg=str(REF / "cfg/tiny.cfg"), weights="", image=str(REF / "images/img2_224x224.png"),
            out=io.StringIO(), err=io.StringIO(),
        )


def test_detector_test_keeps_an_existing_predictions_png_without_force(weights_for, monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.chdir(REF)
    name = tmp_path / "predictions"
    args = ["darknet", "detector", "test", "data/detect80.data", "cfg/yolov3-tiny.cfg", str(weights_for("yolov3-tiny")),
            "images/img2_224x224.png", "-out", str(name)]  # fmt: skip
    assert main(args) == 0
    first = (tmp_path / "predictions.png").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "predictions.png already exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert main([*args, "--force"]) == 0 and (tmp_path / "predictions.png").read_bytes() == first


def test_detector_test_out_under_a_file_is_one_line(weights_for, monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.chdir(REF)
    (tmp_path / "mine.png").write_bytes(b"the user's picture")
    args = ["darknet", "detector", "test", "data/detect80.data", "cfg/yolov3-tiny.cfg", str(weights_for("yolov3-tiny")),
            "images/img2_224x224.png", "-out", str(tmp_path / "mine.png" / "x")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "mine.png is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "mine.png").read_bytes() == b"the user's picture"
