"""Exported files loaded back into a callable: ``runner(batch) -> [np.ndarray, …]`` (one per output).

``batch`` is NCHW, numpy or torch, uint8 for a ``--input uint8`` export and float32 otherwise (the
file's ``metadata["input_dtype"]``). The same loaders serve the parity check and, later, prediction
through onnxruntime/OpenVINO.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.export.metadata import RT_INFO_SECTION, TORCHSCRIPT_FILE
from cnnlab.export.signal_stack import keep_signal_stack

OV_PRECISIONS = {"fp32": "f32", "f32": "f32", "bf16": "bf16"}


@dataclass
class Runner:
    run: Callable[[np.ndarray], list[np.ndarray]]
    metadata: dict[str, str]
    backend: str

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.metadata.get("input_dtype", "float32"))

    @property
    def static_batch(self) -> int | None:
        """The batch size the file was exported with (``--static-batch``), None for a dynamic batch."""
        batch = self.metadata.get("batch", "dynamic")
        return int(batch) if batch.isdecimal() else None

    def __call__(self, images) -> list[np.ndarray]:  # (N, C, H, W) numpy or torch → one array per output
        arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
        arr = np.ascontiguousarray(arr, dtype=self.input_dtype)
        fixed = self.static_batch
        if fixed is None or len(arr) == fixed:
            return self.run(arr)
        return _in_batches_of(fixed, self.run, arr)


def _in_batches_of(size: int, run: Callable[[np.ndarray], list[np.ndarray]], arr: np.ndarray) -> list[np.ndarray]:
    """A file with a fixed batch run on any number of images: whole batches, the last filled with
    copies of the last image, the copies' outputs dropped."""
    filled = -(-len(arr) // size) * size
    padded = np.concatenate([arr, np.repeat(arr[-1:], filled - len(arr), axis=0)]) if filled > len(arr) else arr
    calls = [run(padded[i : i + size]) for i in range(0, filled, size)]
    return [np.concatenate(outs)[: len(arr)] for outs in zip(*calls)]


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise CnnlabError(f"exported model {p} does not exist")
    return p


def load_onnxruntime(path: str | Path, threads: int | None = None) -> Runner:
    import onnxruntime as ort

    p = _existing(path)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    return Runner(lambda x: list(session.run(None, {name: x})), metadata, "onnxruntime")


def openvino_metadata(model) -> dict[str, str]:
    """The ``rt_info['cnnlab']`` entries of an ``openvino.Model``."""
    if not model.has_rt_info([RT_INFO_SECTION]):
        return {}
    keys = model.get_rt_info()[RT_INFO_SECTION]  # a dict of OVAny values
    return {key: model.get_rt_info([RT_INFO_SECTION, key]).astype(str) for key in keys}


def _holds_xml(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(256).lstrip().startswith(b"<")


def load_openvino(path: str | Path, precision: str | None = "f32", threads: int | None = None) -> Runner:
    """``precision`` pins the CPU plugin's inference precision (f32 for parity; it picks bf16 by
    itself on CPUs that have it); ``None`` leaves OpenVINO's default."""
    import openvino as ov

    p = _existing(path)
    if p.suffix == ".xml" and not _holds_xml(p):  # else OpenVINO tries its other parsers on it, and each logs
        raise CnnlabError(f"{p} is not an OpenVINO IR file (no XML in it); export the model again")
    core = ov.Core()
    model = core.read_model(str(p))
    config: dict[str, str | int] = {}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = OV_PRECISIONS[precision]
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    with keep_signal_stack():  # its CPU plugin swaps in a signal stack it may later unmap (signal_stack.py)
        compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> list[np.ndarray]:
        result = request.infer({0: x})
        return [np.array(result[out]) for out in compiled.outputs]

    return Runner(run, openvino_metadata(model), "openvino")


def load_torchscript(path: str | Path) -> Runner:
    import torch

    p = _existing(path)
    extra = {TORCHSCRIPT_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream but still loads
        module = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    metadata = json.loads(extra[TORCHSCRIPT_FILE] or "{}")

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.numpy() for o in module(torch.from_numpy(x))]

    return Runner(run, metadata, "torchscript")


def load_exported(path: str | Path, **kwargs) -> Runner:
    """By suffix: ``.onnx`` → onnxruntime, ``.xml`` → OpenVINO, ``.pt``/``.ts`` → TorchScript."""
    suffix = Path(path).suffix.lower()
    loaders = {".onnx": load_onnxruntime, ".xml": load_openvino, ".pt": load_torchscript, ".ts": load_torchscript}
    if suffix not in loaders:
        raise CnnlabError(f"{path}: unknown exported format {suffix!r}; expected .onnx, .xml or .ts")
    return loaders[suffix](path, **kwargs)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an exported file, without compiling it."""
    p = _existing(path)
    if p.suffix == ".onnx":
        import onnx

        return {q.key: q.value for q in onnx.load(str(p), load_external_data=False).metadata_props}
    if p.suffix == ".xml":
        import openvino as ov

        return openvino_metadata(ov.Core().read_model(str(p)))
    return load_torchscript(p).metadata
