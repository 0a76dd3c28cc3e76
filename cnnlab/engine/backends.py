"""``--backend onnxruntime|openvino``: the same network exported once by :mod:`cnnlab.export` (BatchNorm
folded, dynamic batch) and run by that runtime.

The ONNX file is the one exported graph; OpenVINO reads its IR converted from that file. Both are
cached beside the checkpoint or weights file they came from (``<name>.<key>.onnx`` / ``.xml``; the key
hashes what the graph depends on: the file's size and modification time, the model's class and a darknet
net's cfg and flavor), or in the system's temp folder when that folder is not writable. A later run with
the same file loads the cache instead of exporting again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError

OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def exported_runner(model: nn.Module, example: tuple[int, ...], options, cache_key: str | None) -> Callable:
    """``run(x)`` for (N, C, H, W) float32 tensors → a tensor (one output) or a list (a detector's heads)."""
    export = _export_module(options.backend)
    if options.backend == "onnxruntime" and options.precision != "fp32":
        raise CnnlabError("--backend onnxruntime runs fp32 only (its CPU provider has no bf16 convolutions); "
                          "use --backend openvino or --backend torch for --precision bf16")  # fmt: skip
    onnx_path = _cached_onnx(export, model, cache_key)
    threads = torch.get_num_threads()
    if options.backend == "onnxruntime":
        runner = export.load_onnxruntime(onnx_path, threads=threads)
    else:
        xml = onnx_path.with_suffix(".xml")
        if not xml.is_file():
            export.onnx_to_openvino(onnx_path, xml)
        runner = export.load_openvino(xml, precision=OV_PRECISION[options.precision], threads=threads)
    detector = bool(getattr(_darknet_of(model), "is_detector", False))

    def run(x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        outs = [torch.from_numpy(np.asarray(o)) for o in runner(x.contiguous().numpy())]
        return outs if detector else outs[0]

    return run


def _export_module(backend: str):
    try:
        import cnnlab.export as export
    except ImportError:
        raise CnnlabError(f"--backend {backend} needs cnnlab's exporter (cnnlab.export), which this installation lacks; "
                          "use --backend torch") from None  # fmt: skip
    return export


def _darknet_of(model: nn.Module) -> nn.Module | None:
    from cnnlab.darknet.model import DarknetNet

    return next((m for m in model.modules() if isinstance(m, DarknetNet)), None)


def _preprocess_of(model: nn.Module):
    meta = getattr(model, "meta", None)
    if meta is not None and getattr(meta, "preprocess", None) is not None:
        return meta.preprocess
    net = _darknet_of(model)
    if net is None:
        raise CnnlabError(f"{type(model).__name__} carries no preprocessing metadata to export; use --backend torch")
    from cnnlab.darknet.model import darknet_preprocess

    return darknet_preprocess(net)


def _cached_onnx(export, model: nn.Module, cache_key: str | None) -> Path:
    path = _cache_path(model, cache_key)
    if not path.is_file():
        export.export_onnx(model.eval(), _preprocess_of(model), path)
    return path


def _cache_path(model: nn.Module, cache_key: str | None) -> Path:
    """Beside the source file when it is writable, else in the temp folder; named by a key of what the graph depends on."""
    h = hashlib.sha1(type(model).__qualname__.encode())
    net = _darknet_of(model)
    if net is not None:
        h.update(f"{net.cfg_text}\0{net.flavor}".encode())
    src = Path(cache_key) if cache_key else None
    if src is not None and src.is_file():
        st = src.stat()
        h.update(f"{src.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    else:  # no file to key on: the weights themselves
        for t in model.state_dict().values():
            if isinstance(t, torch.Tensor):
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
    name = f"{src.name if src else 'model'}.{h.hexdigest()[:12]}.onnx"
    if src is not None and os.access(src.parent, os.W_OK):
        return src.parent / name
    folder = Path(tempfile.gettempdir()) / "cnnlab-exports"
    folder.mkdir(exist_ok=True)
    return folder / name
