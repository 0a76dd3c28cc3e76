"""Export: a trained model to ONNX, OpenVINO IR or TorchScript, with its preprocessing inside.

Every export folds BatchNorm into the convs once (on a copy), has a dynamic batch dimension, and
carries its metadata (:mod:`cnnlab.export.metadata`: class names, mean/std, input size, resize and
crop, colour order, precision; detectors their head layout for :mod:`cnnlab.export.yolo_decode`).
With ``input_uint8=True`` the graph takes NCHW uint8 at the input size and normalises inside.

API (what ``cnnlab export`` and the inference backends call)::

    from cnnlab.export import export_onnx, export_openvino, export_torchscript, onnx_to_openvino
    from cnnlab.export import load_onnxruntime, load_openvino, load_torchscript, load_exported, read_metadata

    export_onnx(model, preprocess, "m.onnx", *, input_uint8=False, dynamic_batch=True, classes=None, metadata=None) -> Path
    export_openvino(model, preprocess, "m.xml", *, input_uint8=False, dynamic_batch=True,
                    precision="fp32" | "bf16", classes=None) -> Path      # writes m.xml + m.bin
    export_torchscript(model, preprocess, "m.ts", *, input_uint8=False, classes=None) -> Path
    onnx_to_openvino("m.onnx", "m.xml") -> Path        # the same graph, metadata carried over

    runner = load_onnxruntime("m.onnx", threads=None)
    runner = load_openvino("m.xml", precision="f32" | "bf16" | None, threads=None)   # None: OpenVINO's default
    runner = load_torchscript("m.ts")
    outputs = runner(batch)          # NCHW numpy/torch, uint8 or float32 per runner.metadata["input_dtype"]
                                     # → list of float32 numpy arrays, one per output
    runner.metadata                  # dict[str, str]; read_metadata(path) reads it without compiling

``model`` is any cnnlab model in eval mode as PyTorch runs it (zoo classifiers output logits, darknet
classifiers log-probabilities, darknet detectors one raw tensor per [yolo]/[region] head);
``preprocess`` its :class:`~cnnlab.model_meta.Preprocess`. :func:`export_model` is the one-call form
the command uses (format by name, extra metadata); :mod:`cnnlab.export.parity` checks a file
against the PyTorch model on real images.
"""

from cnnlab.export.exporter import FORMATS, check_request, export_model
from cnnlab.export.metadata import classes_of, preprocess_of
from cnnlab.export.onnx_format import export_onnx
from cnnlab.export.openvino_format import export_openvino, onnx_to_openvino
from cnnlab.export.runtime import (
    Runner,
    load_exported,
    load_onnxruntime,
    load_openvino,
    load_torchscript,
    read_metadata,
)
from cnnlab.export.torchscript_format import export_torchscript

__all__ = [
    "FORMATS", "Runner", "check_request", "classes_of", "export_model", "export_onnx", "export_openvino",
    "export_torchscript", "load_exported", "load_onnxruntime", "load_openvino", "load_torchscript",
    "onnx_to_openvino", "preprocess_of", "read_metadata",
]  # fmt: skip
