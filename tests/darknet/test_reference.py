"""Every public reference run: full outputs, every dumped layer, and every layers.tsv sample, within
rtol 1e-4 / atol 1e-5 of what the real darknet computed, on the stored preprocessed inputs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.darknet import DarknetNet, load_darknet
from cnnlab.darknet.preprocess import letterbox, load_image, resize, resize_min_crop

from .refdata import REF, Run, all_runs, layer_samples, needs_ref

RUNS = all_runs()
RTOL, ATOL = 1e-4, 1e-5

pytestmark = needs_ref


@lru_cache(maxsize=2)
def _model(cfg_name: str, flavor: str, weights: Path) -> DarknetNet:
    return load_darknet(REF / "cfg" / f"{cfg_name}.cfg", weights, flavor)


@pytest.mark.parametrize("run", RUNS, ids=[r.id for r in RUNS])
def test_outputs_match_darknet(run: Run, weights_for) -> None:
    model = _model(run.cfg_name, run.flavor, weights_for(run.cfg_name))
    x = torch.from_numpy(run.input())
    with torch.no_grad():
        outs = model.forward_all(x)
    assert len(outs) == len(model.layers)

    # the vector network_predict returns: the last layer's output
    want = np.fromfile(run.file("output.f32"), "<f4")
    got = outs[-1].flatten().numpy()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{run.id}: network output")

    # full dumps: every [yolo]/[region] layer, and every layer of oracle-mini-pj
    dumps = sorted(run.prefix.parent.glob(run.prefix.name + ".L*.f32"))
    if run.is_detector or run.cfg_name == "oracle-mini-pj":
        assert dumps, f"{run.id}: expected per-layer dumps"
    for dump in dumps:
        i = int(dump.name.split(".L")[-1][:3])
        np.testing.assert_allclose(
            outs[i].flatten().numpy(), np.fromfile(dump, "<f4"), rtol=RTOL, atol=ATOL,
            err_msg=f"{run.id}: layer {i} ({model.layers[i].kind})",
        )

    # layers.tsv: 32 samples of every layer, to catch the first layer that diverges
    samples = layer_samples(run.file("layers.tsv"))
    assert set(samples) == set(range(len(model.layers)))
    for i, pts in samples.items():
        flat = outs[i].flatten().numpy()
        idx = np.array([p for p, _ in pts])
        ref = np.array([v for _, v in pts], np.float32)
        np.testing.assert_allclose(flat[idx], ref, rtol=RTOL, atol=ATOL, err_msg=f"{run.id}: layer {i} samples")


def test_detector_returns_every_head_and_classifier_a_vector(weights_for) -> None:
    yolo = _model("yolov3-tiny", "pjreddie", weights_for("yolov3-tiny"))
    x = torch.rand(2, 3, 416, 416)
    with torch.no_grad():
        outs = yolo(x)
    assert isinstance(outs, list) and [tuple(o.shape) for o in outs] == [(2, 255, 13, 13), (2, 255, 26, 26)]
    clf = _model("tiny", "pjreddie", weights_for("tiny"))
    with torch.no_grad():
        p = clf(torch.rand(3, 3, 224, 224))
    assert p.shape == (3, 1000)
    torch.testing.assert_close(p.sum(1), torch.ones(3))  # softmax output


INPUTS = sorted((REF / "expected" / "inputs").glob("*.f32")) if (REF / "expected").is_dir() else []


@needs_ref
@pytest.mark.parametrize("path", [p for p in INPUTS if ".png__" in p.name], ids=lambda p: p.name)
def test_preprocessing_is_bit_exact_on_png(path: Path) -> None:
    image, rest = path.name[:-4].split("__")
    mode, wh = rest.rsplit("_", 1)
    w, h = (int(v) for v in wh.split("x"))
    im = load_image(REF / "images" / image)
    fn = {"letterbox": letterbox, "resize": resize, "resizemin_crop": resize_min_crop}[mode]
    got = fn(im, w, h)
    want = np.fromfile(path, "<f4").reshape(3, h, w)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
