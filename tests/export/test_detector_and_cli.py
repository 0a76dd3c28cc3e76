"""Detector raw-head export (parity, and the copyable numpy decode against cnnlab's darknet decode),
bf16 OpenVINO export, and the command's output and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.export import load_onnxruntime, load_openvino, read_metadata
from cnnlab.export.parity import reference_outputs, sample_images
from tests.export.cfgs import YOLO
from tests.export.conftest import resnet18_mnist, train_briefly


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A two-head YOLO cfg with random weights and non-trivial BatchNorm statistics, as .weights + .data."""
    from cnnlab.darknet.layers import DarknetBatchNorm
    from cnnlab.darknet.model import load_darknet

    tmp = tmp_path_factory.mktemp("yolo")
    (tmp / "yolo.cfg").write_text(YOLO)
    torch.manual_seed(0)
    net = load_darknet(str(tmp / "yolo.cfg"), flavor="alexeyab")
    for bn in (m for m in net.modules() if isinstance(m, DarknetBatchNorm)):
        n = bn.weight.numel()
        bn.weight.data, bn.bias.data = torch.rand(n) + 0.5, torch.randn(n) * 0.1
        bn.running_mean, bn.running_var = torch.randn(n) * 0.1, torch.rand(n) + 0.5
    net.save_weights(tmp / "yolo.weights")
    (tmp / "shapes.names").write_text("disk\nsquare\ntriangle\n")
    (tmp / "shapes.data").write_text(f"classes=3\nnames={tmp / 'shapes.names'}\n")
    return tmp, net


def test_detector_exports_raw_heads(detector, capsys) -> None:
    tmp, net = detector
    cfg, w = tmp / "yolo.cfg", tmp / "yolo.weights"
    code = main(["export", f"darknet:{cfg}", "--weights", str(w), "--data", str(tmp / "shapes.data"), "--flavor", "alexeyab", "--format", "onnx"])
    out = capsys.readouterr().out
    assert code == 0, out
    print(out)
    assert "outputs head0, head1" in out and "max |onnxruntime - PyTorch|" in out
    meta = read_metadata(tmp / "yolo.onnx")
    heads = json.loads(meta["heads"])
    assert meta["task"] == "detect" and json.loads(meta["classes"]) == ["disk", "square", "triangle"]
    assert [h["kind"] for h in heads] == ["yolo", "yolo"] and heads[0]["anchors"][0] == [81.0, 82.0]
    assert meta["detector_resize"].startswith("stretch")

    images, _ = sample_images(net_pre := _pre(net), 8)
    ref = reference_outputs(net, net_pre, images)
    got = load_onnxruntime(tmp / "yolo.onnx", threads=1)(images.float() / 255)
    assert [g.shape for g in got] == [r.shape for r in ref] == [(8, 24, 8, 8), (8, 24, 16, 16)]  # batch 8, traced with 2
    assert max(np.abs(g - r).max() for g, r in zip(got, ref)) < 1e-4


def test_detector_exports_to_bf16_openvino(detector, capsys) -> None:
    """Its [yolo] heads pass gradients by hand when they train; the export traces them as they infer
    (with gradients on, torch.jit saw two different graphs and the bf16 export failed)."""
    tmp, net = detector
    cfg, w, xml = tmp / "yolo.cfg", tmp / "yolo.weights", tmp / "yolo-bf16.xml"
    argv = ["export", f"darknet:{cfg}", "--weights", str(w), "--flavor", "alexeyab", "--format", "openvino", "--precision", "bf16", "--out", str(xml)]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "max |OpenVINO bf16 - PyTorch|" in out
    images, _ = sample_images(net_pre := _pre(net), 4)
    ref = reference_outputs(net, net_pre, images)
    got = load_openvino(xml, "bf16", threads=1)(images.float() / 255)
    assert max(np.abs(g - r).max() / np.abs(r).max() for g, r in zip(got, ref)) < 0.05
    assert all(p.requires_grad for p in net.parameters())  # the user's model is left as it was


def _pre(net):
    from cnnlab.darknet.model import darknet_preprocess

    return darknet_preprocess(net)


def test_numpy_decode_matches_cnnlab(detector) -> None:
    from cnnlab.darknet.detect import network_boxes, nms_sort
    from cnnlab.export.yolo_decode import decode, head_specs, nms

    _, net = detector
    images, _ = sample_images(_pre(net), 2)
    with torch.no_grad():
        outs = net(images.float() / 255)
    heads = json.loads(json.dumps(head_specs(net)))  # as read back from the metadata
    thresh = 0.25
    for k in range(2):
        theirs = network_boxes(net, [o[k : k + 1] for o in outs], 64, 64, thresh, letter=False)
        boxes, _, probs = decode([o[k].numpy() for o in outs], heads, thresh)
        np.testing.assert_allclose(boxes, theirs.boxes, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(probs, theirs.probs, rtol=1e-5, atol=1e-6)
        kept = nms_sort(theirs, 0.45)
        want = sorted((c, round(float(kept.probs[i, c]), 5)) for i, c in zip(*np.nonzero(kept.probs)))
        got = sorted((c, round(p, 5)) for c, p, _ in nms(boxes, probs, 0.45))
        assert got == want and len(got) > 0


def test_bf16_openvino_export_is_close(mnist_train, mnist_val, tmp_path) -> None:
    """bf16 keeps 8 bits of mantissa: outputs within 2% of the largest |logit|, top-1 equal on >= 97%."""
    from cnnlab.export import export_openvino

    torch.manual_seed(0)
    model, pre = resnet18_mnist()
    model = train_briefly(model, pre, mnist_train, steps=6, lr=0.01)
    xml = export_openvino(model, pre, tmp_path / "r18-bf16.xml", input_uint8=True, precision="bf16")
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert xml.with_suffix(".bin").stat().st_size < 0.6 * fp32_bytes  # weights stored as bf16
    runner = load_openvino(xml, "bf16", threads=1)
    assert runner.metadata["precision"] == "bf16"
    images = mnist_val[0][:256]
    ref = reference_outputs(model, pre, images)[0]
    out = runner(images)[0]
    diff, scale = float(np.abs(out - ref).max()), float(np.abs(ref).max())
    agree = float((out.argmax(1) == ref.argmax(1)).mean())
    print(f"bf16: max |diff| {diff:.3g} (max |logit| {scale:.3g}); top-1 equal {agree:.3f}")
    assert diff < 0.02 * scale and agree >= 0.97
    assert np.abs(ref - reference_outputs(model, pre, images)[0]).max() == 0  # exporting left the model as it was


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere/run", "--format", "onnx"], "nowhere/run does not exist"),
        (["{run}", "--format", "tflite"], "unknown format 'tflite'"),
        (["{run}", "--format", "onnx", "--precision", "bf16"], "bf16 export goes to OpenVINO only"),
        (["darknet:{cfg}", "--format", "onnx"], "needs its trained weights: pass --weights"),
        (["darknet:missing.cfg", "--weights", "w", "--format", "onnx"], "cfg missing.cfg does not exist"),
        (["{run}", "--format", "onnx", "--input", "int8"], "unknown --input 'int8'"),
        (["{run}", "--format", "onnx"], "already exists; pass --force"),
        (["{run}", "--format", "onnx", "--out", "{run}/m.xml"], "an .xml name is OpenVINO's"),
        (["{run}", "--format", "onnx", "--out", "{run}/checkpoints/best.pt/m.onnx"], "best.pt is a file, not a folder"),
        (["{run}", "--format", "onnx", "--out", "{run}/checkpoints/last.pt", "--force"], "name the ONNX file"),
        (["{run}", "--format", "torchscript", "--out", "{run}/m.onnx"], "an .onnx name is ONNX's"),
        (["{run}", "--format", "openvino", "--out", "{run}/m.xml"], "m.bin is a folder; choose another --out"),
        (["{run}", "--format", "onnx", "--check-images", "-1"], "--check-images -1"),
        (["{run}", "--format", "onnx", "--flavor", "alexeyab"], "--flavor goes with darknet:CFG"),
        (["{run}", "--format", "onnx", "--out", "{run}/checkpoints"], "checkpoints is a folder; name the file to write in it, e.g."),
        (["{run}", "--format", "onnx", "--static-batch", "0"], "--static-batch 0: give the batch size"),
        (["{run}", "--format", "torchscript", "--static-batch", "1"], "a TorchScript module takes any batch"),
    ],
)
def test_errors_are_one_line(args: list[str], message: str, detector, tmp_path, capsys) -> None:
    from cnnlab.models import create_model
    from tests.export.conftest import MNIST_32, save_checkpoint

    ckpt = save_checkpoint(create_model("lenet5", num_classes=10), [str(i) for i in range(10)], MNIST_32, tmp_path / "run" / "checkpoints" / "best.pt")
    if message.startswith("already exists"):
        ckpt.with_suffix(".onnx").write_bytes(b"keep me")
    if "m.bin is a folder" in message:
        (tmp_path / "run" / "m.bin").mkdir()
    argv = [a.format(run=tmp_path / "run", cfg=detector[0] / "yolo.cfg") for a in args]
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    if message.startswith("already exists"):
        assert ckpt.with_suffix(".onnx").read_bytes() == b"keep me"


def test_paper_nets_export_to_onnx_and_bf16_openvino(tmp_path) -> None:
    """LeNet-5 (paper: C3's connection table, the RBF output) and a small net with AlexNet's LRN export
    in both formats; bf16 keeps the LRN in float32 (torch has no bf16 kernel for it to trace)."""
    from cnnlab.export import export_onnx, export_openvino
    from cnnlab.model_meta import Preprocess
    from cnnlab.models import create_model

    torch.manual_seed(0)
    lrn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.LocalResponseNorm(5, 1e-4 * 5, 0.75, 2.0),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 4)).eval()  # fmt: skip
    lenet = create_model("lenet5_paper", num_classes=4).eval()
    for name, model, pre in (("lenet5_paper", lenet, lenet.meta.preprocess),
                             ("lrn", lrn, Preprocess((3, 16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 16))):  # fmt: skip
        images = torch.randint(0, 256, (2, *pre.input_size), dtype=torch.uint8)
        ref = reference_outputs(model, pre, images)[0]
        onnx = load_onnxruntime(export_onnx(model, pre, tmp_path / f"{name}.onnx", input_uint8=True), threads=1)
        np.testing.assert_allclose(onnx(images)[0], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        bf16 = load_openvino(export_openvino(model, pre, tmp_path / f"{name}-bf16.xml", input_uint8=True, precision="bf16"), "bf16", threads=1)
        assert np.abs(bf16(images)[0] - ref).max() < 0.05 * np.abs(ref).max()


def test_an_op_the_exporter_lacks_is_named_in_one_line(tmp_path) -> None:
    from cnnlab.errors import CnnlabError
    from cnnlab.export.exporter import export_model
    from cnnlab.models import create_model

    class Cdist(torch.nn.Module):  # the dynamo ONNX exporter of torch 2.14 has no function for aten._cdist_forward
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cdist(x.flatten(1), x.flatten(1)[:1])

    pre = create_model("lenet5", num_classes=2).meta.preprocess
    try:
        export_model(Cdist(), pre, "onnx", tmp_path / "cdist.onnx")
    except CnnlabError as e:
        message = str(e)
    else:
        pytest.skip("this torch exports cdist to ONNX")
    assert message.startswith("the onnx exporter could not translate Cdist: ") and "cdist" in message, message
    assert message.endswith("; try --format torchscript") and "\n" not in message
    assert not (tmp_path / "cdist.onnx").exists()


@pytest.mark.parametrize(("fmt", "batch", "check"), [("onnx", 1, 3), ("openvino", 3, 4), ("onnx", 4, 2)])
def test_static_batch_n_fixes_the_input_at_n_and_runs_any_count_in_batches_of_n(fmt, batch, check, tmp_path, capsys) -> None:
    from cnnlab.export.exporter import parity_runner
    from cnnlab.models import create_model
    from tests.export.conftest import MNIST_32, save_checkpoint

    model = create_model("lenet5", num_classes=10)
    ckpt = save_checkpoint(model, [str(i) for i in range(10)], MNIST_32, tmp_path / "run" / "checkpoints" / "best.pt")
    assert main(["export", str(ckpt), "--format", fmt, "--static-batch", str(batch), "--check-images", str(check)]) == 0
    printed = capsys.readouterr().out
    out = ckpt.with_name(f"best-b{batch}" + (".onnx" if fmt == "onnx" else ".xml"))  # a static file has its own name
    assert f"[{batch}, 1, 32, 32]" in printed and f"parity on {check} held-out" in printed, printed
    runner = parity_runner(out, fmt, "fp32", threads=1)
    assert runner.metadata["batch"] == str(batch) and runner.static_batch == batch
    images, _ = sample_images(MNIST_32, 2 * batch + 1)
    with pytest.raises(Exception):  # noqa: B017, PT011 (the file itself takes only N; each runtime raises its own type)
        runner.run(np.zeros((batch + 1, 1, 32, 32), np.float32))
    from cnnlab.export.graph import normalize_uint8

    got = runner(normalize_uint8(images, MNIST_32))[0]  # split into batches of N, the last one filled
    ref = reference_outputs(model, MNIST_32, images)[0]
    assert got.shape == ref.shape == (2 * batch + 1, 10) and np.abs(got - ref).max() < 1e-4


def test_a_static_batch_too_big_to_trace_is_refused(tmp_path, capsys) -> None:
    from cnnlab.models import create_model
    from tests.export.conftest import MNIST_32, save_checkpoint

    ckpt = save_checkpoint(create_model("lenet5", num_classes=10), [str(i) for i in range(10)], MNIST_32, tmp_path / "best.pt")
    assert main(["export", str(ckpt), "--format", "onnx", "--static-batch", "1000000"]) == 2
    err = capsys.readouterr().err
    assert "--static-batch 1000000: one batch of 1x32x32 inputs is 3.8 GiB" in err and "at most 262144" in err, err
    assert not list(tmp_path.glob("*.onnx"))


def test_a_static_batch_from_the_library_call_is_recorded_too(tmp_path) -> None:
    from cnnlab.export import export_onnx
    from cnnlab.models import create_model
    from tests.export.conftest import MNIST_32

    path = export_onnx(create_model("lenet5", num_classes=10), MNIST_32, tmp_path / "m.onnx", dynamic_batch=False)
    runner = load_onnxruntime(path, threads=1)
    assert runner.static_batch == 2 and runner(np.zeros((3, 1, 32, 32), np.float32))[0].shape == (3, 10)
    assert load_onnxruntime(export_onnx(create_model("lenet5", num_classes=10), MNIST_32, tmp_path / "d.onnx"), threads=1).static_batch is None
