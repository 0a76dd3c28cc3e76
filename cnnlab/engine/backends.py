"""``--backend onnxruntime|openvino``: the same network exported once by :mod:`cnnlab.export` (BatchNorm
folded, dynamic batch) and run by that runtime.

The ONNX file is the one exported graph; OpenVINO reads its IR converted from that file. Both are
cached beside the checkpoint or weights file they came from (``<name>.<key>.onnx`` / ``.xml``; the key
hashes what the graph depends on: the weights, the model's class and a darknet net's cfg and flavor),
or in the user's cache (``~/.cache/cnnlab/exports``) when that folder is not writable. A later run with the same weights
loads the cache instead of exporting again. The key also travels in the file's metadata
(``cache_key``): a cached file the runtime cannot read, or that holds another graph (copied over it,
or written by another version), is exported again.
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
    from cnnlab.export.failures import ExportFailed

    onnx_path = _cache_path(model, cache_key)
    cached = onnx_path.is_file()
    try:
        runner = _load_runner(export, model, onnx_path, options)
    except ExportFailed as e:
        raise CnnlabError(f"{e}; use --backend torch") from e
    except Exception:  # a cached file the runtime cannot read (a run killed while writing it), or another
        if not cached:  # graph: export it again, once
            raise
        for stale in (onnx_path, onnx_path.with_suffix(".xml"), onnx_path.with_suffix(".bin")):
            stale.unlink(missing_ok=True)
        runner = _load_runner(export, model, onnx_path, options)
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


def _load_runner(export, model: nn.Module, onnx_path: Path, options) -> Callable:
    """The runtime's runner on the cached graph, exported (and converted for OpenVINO) first if absent."""
    key = _key_of(onnx_path)
    if not onnx_path.is_file():
        export.export_onnx(model.eval(), _preprocess_of(model), onnx_path, metadata={"cache_key": key})
    threads = torch.get_num_threads()
    if options.backend == "onnxruntime":
        runner = export.load_onnxruntime(onnx_path, threads=threads)
    else:
        xml = onnx_path.with_suffix(".xml")
        if not xml.is_file():
            export.onnx_to_openvino(onnx_path, xml)
        runner = export.load_openvino(xml, precision=OV_PRECISION[options.precision], threads=threads)
    if runner.metadata.get("cache_key") != key:
        raise ValueError(f"{onnx_path} holds another graph than its name says")
    return runner


def _key_of(onnx_path: Path) -> str:
    return onnx_path.name.rsplit(".", 2)[-2]  # <name>.<key>.onnx


def _cache_path(model: nn.Module, cache_key: str | None) -> Path:
    """Beside the source file when it is writable, else in the temp folder; named by a key of what the
    graph depends on: the class, a darknet net's cfg, and the weights themselves (one checkpoint file
    holds two sets, the EMA and the raw ones, so the file alone does not say which graph to run)."""
    h = hashlib.sha1(type(model).__qualname__.encode())
    net = _darknet_of(model)
    if net is not None:
        h.update(f"{net.cfg_text}\0{net.flavor}".encode())
    for t in model.state_dict().values():
        if isinstance(t, torch.Tensor):
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    src = Path(cache_key) if cache_key else None
    name = f"{src.name if src else 'model'}.{h.hexdigest()[:12]}.onnx"
    if src is not None and os.access(src.parent, os.W_OK):
        return src.parent / name
    return _own_folder() / name


def _own_folder() -> Path:
    """This user's export cache (a shared temp folder would load what another user put there)."""
    from cnnlab.fileio import user_cache_dir

    folder = user_cache_dir() / "exports"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError:  # no writable home: a temp folder only this user can enter
        folder = Path(tempfile.gettempdir()) / f"cnnlab-exports-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        if folder.stat().st_uid != os.getuid():
            raise CnnlabError(f"{folder} belongs to another user; set CNNLAB_CACHE_DIR to a folder of yours") from None
        return folder
