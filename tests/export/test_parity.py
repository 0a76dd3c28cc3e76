"""Issue 15, acceptance 2: LeNet-5, ResNet-18 and a darknet cfg, each briefly trained on mnist5k,
exported to ONNX (torch.onnx dynamo exporter) and OpenVINO (converted from that ONNX file), then run
on the 1,000 held-out digits: outputs within 1e-4 of PyTorch, top-1 equal except where the top two
probabilities are within 1e-3. Plus the uint8-input graph and the metadata round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.export import (
    export_onnx,
    export_torchscript,
    load_onnxruntime,
    load_openvino,
    load_torchscript,
    onnx_to_openvino,
    preprocess_of,
    read_metadata,
)  # fmt: skip
from cnnlab.export.graph import normalize_uint8
from cnnlab.export.parity import reference_outputs
from cnnlab.model_meta import Preprocess
from tests.export.cfgs import MNIST_CLASSIFIER
from tests.export.conftest import MNIST_32, mnist_uint8, resnet18_mnist, train_briefly

CLASSES = [str(i) for i in range(10)]


def _lenet(train, tmp: Path):
    from cnnlab.models import create_model

    torch.manual_seed(0)
    return train_briefly(create_model("lenet5", num_classes=10), MNIST_32, train, steps=40, lr=0.1), MNIST_32


def _resnet18(train, tmp: Path):
    torch.manual_seed(0)
    model, pre = resnet18_mnist()
    return train_briefly(model, pre, train, steps=12, lr=0.01), pre  # lr 0.05 left logits up to 230, where PyTorch's own fp32 error (vs fp64) is 6e-5


def _darknet(train, tmp: Path):
    from cnnlab.models import create_model

    cfg = tmp / "mnist.cfg"
    cfg.write_text(MNIST_CLASSIFIER)
    torch.manual_seed(0)
    model = create_model(f"darknet:{cfg}", num_classes=10)
    pre = model.meta.preprocess  # 28×28 letterbox (the digits' own size), pixels /255
    data = mnist_uint8("train", pre, 2048)
    return train_briefly(model, pre, data, steps=40, lr=0.02), pre


BUILDERS = {"lenet5": _lenet, "resnet18": _resnet18, "darknet": _darknet}


@pytest.fixture(scope="module", params=list(BUILDERS))
def exported(request, mnist_train, tmp_path_factory):
    """(model, preprocess, ONNX path, OpenVINO path, held-out uint8 digits, labels) per architecture."""
    tmp = tmp_path_factory.mktemp(request.param)
    model, pre = BUILDERS[request.param](mnist_train, tmp)
    onnx_path = export_onnx(model, pre, tmp / "m.onnx", classes=CLASSES)
    xml = onnx_to_openvino(onnx_path, tmp / "m.xml")
    images, labels = mnist_uint8("val", pre) if pre.input_size != MNIST_32.input_size else mnist_uint8("val", MNIST_32)
    return model, pre, onnx_path, xml, images, labels


def _probs(x: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(x), 1).numpy()  # log-probs and logits alike


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_outputs_and_top1_match_pytorch(exported, backend: str) -> None:
    model, pre, onnx_path, xml, images, labels = exported
    runner = load_onnxruntime(onnx_path, threads=1) if backend == "onnxruntime" else load_openvino(xml, "f32", threads=1)
    ref = reference_outputs(model, pre, images)[0]  # (1000, 10)
    out = runner(normalize_uint8(images, pre))[0]
    assert out.shape == ref.shape == (1000, 10)
    diff = float(np.abs(out - ref).max())
    print(f"{backend}: max |diff| {diff:.3g} on 1000 held-out digits; top-1 acc {(ref.argmax(1) == labels.numpy()).mean():.3f}")
    assert diff < 1e-4
    p = np.sort(_probs(ref), 1)
    near_tie = p[:, -1] - p[:, -2] < 1e-3
    assert (ref.argmax(1) == out.argmax(1))[~near_tie].all()


def test_batchnorm_is_folded(exported) -> None:
    import onnx

    model, *_ = exported
    ops = {n.op_type for n in onnx.load(str(exported[2])).graph.node}
    assert "BatchNormalization" not in ops
    meta = read_metadata(exported[2])
    has_bn = any("BatchNorm" in type(m).__name__ for m in model.modules())
    assert (int(meta["batchnorm_folded"]) > 0) == has_bn


def test_metadata_round_trips(exported, tmp_path) -> None:
    model, pre, onnx_path, xml, images, _ = exported
    ts = export_torchscript(model, pre, tmp_path / "m.ts", classes=CLASSES)
    for path in (onnx_path, xml, ts):
        meta = read_metadata(path)
        assert preprocess_of(meta) == pre, path
        assert meta["classes"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
        assert meta["input_dtype"] == "float32" and meta["color_order"] == "GRAY" and meta["task"] == "classify"
    out = load_torchscript(ts)(normalize_uint8(images[:5], pre))[0]  # batch 5, traced with 2
    assert np.abs(out - reference_outputs(model, pre, images[:5])[0]).max() < 1e-4


def test_uint8_input_graph_is_preprocessing_plus_model(exported, tmp_path) -> None:
    model, pre, *_, images, _ = exported
    # darknet cfgs normalise by /255 only (mean 0, std 1): the graph's scaling alone; LeNet-5 and ResNet-18 add mean/std
    path = export_onnx(model, pre, tmp_path / "u8.onnx", input_uint8=True)
    runner = load_onnxruntime(path, threads=1)
    assert runner.input_dtype == np.uint8 and read_metadata(path)["input_dtype"] == "uint8"
    out = runner(images[:64])[0]  # raw pixels in
    assert np.abs(out - reference_outputs(model, pre, images[:64])[0]).max() < 1e-4


def test_preprocess_with_letterbox_round_trips() -> None:
    from cnnlab.export.metadata import build_metadata

    pre = Preprocess((3, 64, 48), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), 64, "bicubic", "letterbox")
    meta = build_metadata("x", ["a"], pre, ["logits"], input_uint8=True)
    assert preprocess_of(meta) == pre and meta["color_order"] == "RGB" and meta["resize_mode"] == "letterbox"


def test_parity_line_gives_the_output_scale_when_it_is_unusual() -> None:
    """A difference of 96 is nothing on outputs of 1e12 (an untrained deep net) and a lot on logits of 10."""
    from cnnlab.export.parity import compare

    big = compare([np.array([[1e12, 5.0]])], [np.array([[1e12 + 96, 5.0]])], "photos", classify=True)
    assert big.line("onnxruntime") == "parity on 1 photos: max |onnxruntime - PyTorch| = 96 (largest |output| 1e+12); top-1 equal 1/1"
    usual = compare([np.array([[10.0, 5.0]])], [np.array([[10.0, 5.5]])], "photos", classify=True)
    assert usual.line("onnxruntime") == "parity on 1 photos: max |onnxruntime - PyTorch| = 0.5; top-1 equal 1/1"
