"""ONNX export with torch's current exporter (``torch.onnx.export(..., dynamo=True)``) and onnxruntime."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch import nn

from cnnlab.export.failures import translating
from cnnlab.export.prepare import INPUT_NAME, Prepared, prepare
from cnnlab.fileio import atomic_writer
from cnnlab.model_meta import Preprocess


def write_onnx(prep: Prepared, path: Path, dynamic_batch: bool = True) -> Path:
    """Export ``prep.graph`` to ``path`` (one self-contained file) with ``prep.metadata`` as metadata_props."""
    import onnx

    dims = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    prep.metadata["batch"] = "dynamic" if dynamic_batch else str(len(prep.example))
    with translating("onnx", prep.metadata["model"]), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        program = torch.onnx.export(
            prep.graph, (prep.example,), dynamo=True, input_names=[INPUT_NAME], output_names=prep.output_names,
            dynamic_shapes=dims, verbose=False,
        )  # fmt: skip
    proto = program.model_proto
    onnx.helper.set_model_props(proto, prep.metadata)
    with atomic_writer(path) as f:
        f.write(proto.SerializeToString())  # weights inline: one file (fine below protobuf's 2 GB limit)
    return path


def export_onnx(
    model: nn.Module,
    preprocess: Preprocess,
    path: str | Path,
    *,
    input_uint8: bool = False,
    dynamic_batch: bool = True,
    classes: list[str] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """``model`` (BatchNorm folded on a copy) → an ONNX file with its preprocessing as metadata (and
    ``metadata``'s keys besides)."""
    prep = prepare(model, preprocess, classes=classes, input_uint8=input_uint8)
    prep.metadata.update(metadata or {})
    return write_onnx(prep, Path(path), dynamic_batch)
