"""Every public reference run: full outputs, every dumped layer, and every layers.tsv sample, within
rtol 1e-4 / atol 1e-5 of what the real darknet computed, on darknet's own preprocessed inputs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.darknet import DarknetNet, load_darknet

from .refdata import (
    REF,
    STORE_EPS,
    Run,
    all_runs,
    input_hashes,
    layer_samples,
    preprocess_input,
    sha256_of,
)

RUNS = all_runs()
RTOL, ATOL = 1e-4, 1e-5
STORED_RTOL = RTOL - 2 * STORE_EPS  # against the stored (rounded) dumps: no looser than RTOL on darknet's own


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
    got = outs[-1].flatten().numpy()
    np.testing.assert_allclose(got, run.output(), rtol=STORED_RTOL, atol=ATOL, err_msg=f"{run.id}: network output")

    # full dumps: every [yolo]/[region] layer, and every layer of oracle-mini-pj
    dumps = run.dumps()
    if run.is_detector or run.cfg_name == "oracle-mini-pj":
        assert dumps, f"{run.id}: expected per-layer dumps"
    if run.cfg_name == "oracle-mini-pj":
        assert set(dumps) == set(range(len(model.layers)))
    for i, want in dumps.items():
        np.testing.assert_allclose(
            outs[i].flatten().numpy(), want, rtol=STORED_RTOL, atol=ATOL,
            err_msg=f"{run.id}: layer {i} ({model.layers[i].kind})",
        )

    # layers.tsv: 32 samples of every layer (darknet's printed values, not rounded), to catch the first layer that diverges
    samples = layer_samples(run.text("layers.tsv"))
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


@pytest.mark.parametrize("name", [n for n in input_hashes() if ".png__" in n])
def test_preprocessing_is_bit_exact_on_png(name: str) -> None:
    # darknet's input is stored as its sha256: equal hashes of the float32 bytes mean bit-identical arrays
    got = preprocess_input(name)
    w, h = (int(v) for v in name[: -len(".f32")].rsplit("_", 1)[1].split("x"))
    assert got.dtype == np.float32 and got.shape == (3, h, w)
    assert sha256_of(got) == input_hashes()[name]


def test_reference_data_is_in_the_repository_and_complete() -> None:
    """The parity tests need nothing outside the repository, and none of them can vanish silently: a clone
    without ../shared once collected 57 fewer darknet tests and skipped 20 more, without a word."""
    repo = Path(__file__).resolve().parents[2]
    assert REF.is_relative_to(repo) and (REF / "expected.tar.xz").is_file()
    assert len(RUNS) == 21 and sum(r.is_detector for r in RUNS) == 6
    assert sum(".png__" in n for n in input_hashes()) == 15 and len(input_hashes()) == 21
    assert sorted(p.stem for p in (REF / "cfg").glob("*.cfg")) == [
        "darknet", "oracle-mini-pj", "resnet18", "resnet50", "tiny", "yolov2-tiny", "yolov3-tiny", "yolov4-tiny",
    ]  # fmt: skip
    for run in RUNS:
        assert run.text("layers.tsv") and run.output().size == int(run.meta["net_outputs"]), run.id
        if run.image.endswith(".png"):
            assert run.text("cli.stdout") and run.text("cli.stderr"), run.id
