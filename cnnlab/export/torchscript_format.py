"""TorchScript export (``torch.jit.trace``), metadata as the extra file ``cnnlab_metadata.json``.

Traced, not scripted: darknet layers index Python lists of outputs, which scripting rejects. The
trace runs on a batch of 2 and is checked on other batch sizes by the parity run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from cnnlab.export.metadata import TORCHSCRIPT_FILE
from cnnlab.export.failures import translating
from cnnlab.export.prepare import Prepared, prepare
from cnnlab.fileio import atomic_writer
from cnnlab.model_meta import Preprocess


def write_torchscript(prep: Prepared, path: Path) -> Path:
    with translating("torchscript", prep.metadata["model"]), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python values; the parity run checks the result
        traced = torch.jit.trace(prep.graph, (prep.example,), check_trace=False)
    with atomic_writer(path) as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream but still saves
        torch.jit.save(traced, f, _extra_files={TORCHSCRIPT_FILE: json.dumps(prep.metadata)})
    return path


def export_torchscript(
    model: nn.Module,
    preprocess: Preprocess,
    path: str | Path,
    *,
    input_uint8: bool = False,
    classes: list[str] | None = None,
) -> Path:
    prep = prepare(model, preprocess, classes=classes, input_uint8=input_uint8)
    return write_torchscript(prep, Path(path))
