"""One export request end to end: check it, write the file, load it back for the parity run."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.export.failures import ExportFailed
from cnnlab.export.prepare import Prepared, prepare
from cnnlab.export.runtime import (
    Runner,
    load_onnxruntime,
    load_openvino,
    load_torchscript,
)
from cnnlab.model_meta import Preprocess

FORMATS = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".ts"}
BACKENDS = {"onnx": "onnxruntime", "openvino": "OpenVINO", "torchscript": "torch.jit"}


def check_request(fmt: str, precision: str) -> None:
    if fmt not in FORMATS:
        raise CnnlabError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if precision not in ("fp32", "bf16"):
        raise CnnlabError(f"unknown precision {precision!r}; use fp32 or bf16")
    if precision == "bf16" and fmt != "openvino":
        why = "onnxruntime's CPU provider lacks bf16 kernels" if fmt == "onnx" else "cnnlab exports TorchScript in fp32"
        raise CnnlabError(f"bf16 export goes to OpenVINO only ({why}); use --format openvino or --precision fp32 with {fmt}")


NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("onnx", "onnxscript", "openvino"), "torchscript": ()}


def check_installed(fmt: str) -> None:
    """One line naming the missing packages instead of an ImportError deep in an exporter."""
    import importlib.util

    missing = [m for m in NEEDS[fmt] if importlib.util.find_spec(m) is None]
    if missing:
        raise CnnlabError(f"--format {fmt} needs {', '.join(missing)}: pip install 'cnnlab[export]'")


def default_path(stem: Path, fmt: str, precision: str, input_uint8: bool, static_batch: int | None = None) -> Path:
    """``best.pt`` → ``best.onnx``, ``best-uint8.onnx``, ``best-bf16.xml``, ``best-b1.onnx`` … beside it."""
    tags = ("-uint8" if input_uint8 else "") + ("-bf16" if precision == "bf16" else "") + (f"-b{static_batch}" if static_batch else "")
    return stem.with_name(stem.name + tags + FORMATS[fmt])


def written_files(path: Path, fmt: str) -> list[Path]:
    return [path, path.with_suffix(".bin")] if fmt == "openvino" else [path]


def export_model(
    model: nn.Module,
    pre: Preprocess,
    fmt: str,
    path: str | Path,
    *,
    classes: list[str] | None = None,
    input_uint8: bool = False,
    precision: str = "fp32",
    static_batch: int | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> tuple[Path, Prepared]:
    """Write ``model`` as ``fmt`` (onnx | openvino | torchscript) to ``path``; returns it and what was exported.
    ``static_batch``: fix the batch dimension at that size (onnx, openvino); None leaves it dynamic."""
    from cnnlab.export.onnx_format import write_onnx
    from cnnlab.export.openvino_format import write_openvino
    from cnnlab.export.torchscript_format import write_torchscript

    check_request(fmt, precision)
    prep = prepare(model, pre, classes=classes, input_uint8=input_uint8, precision=precision, extra_metadata=extra_metadata,
                   batch=static_batch or 2)  # fmt: skip
    path = Path(path)
    try:
        if fmt == "onnx":
            return write_onnx(prep, path, static_batch is None), prep
        if fmt == "openvino":
            return write_openvino(prep, path, static_batch is None), prep
        return write_torchscript(prep, path), prep
    except ExportFailed as e:
        other = "--precision fp32" if precision == "bf16" else f"--format {'torchscript' if fmt != 'torchscript' else 'onnx'}"
        raise CnnlabError(f"{e}; try {other}") from e


def parity_runner(path: Path, fmt: str, precision: str, threads: int | None = None) -> Runner:
    """The runtime the export is checked with; OpenVINO pinned to the export's precision (f32 for fp32:
    left alone it picks bf16 on CPUs that have it)."""
    if fmt == "onnx":
        return load_onnxruntime(path, threads)
    if fmt == "openvino":
        return load_openvino(path, precision, threads)
    return load_torchscript(path)
