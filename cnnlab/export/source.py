"""What ``cnnlab export`` exports: a run folder, a checkpoint, or ``darknet:CFG`` with ``--weights``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.model_meta import Preprocess

DARKNET = "darknet:"


@dataclass
class ExportSource:
    model: nn.Module  # eval mode, fp32, BatchNorm not yet folded
    classes: list[str]
    pre: Preprocess
    stem: Path  # default output path without its suffix (beside the checkpoint or the .weights)
    inputs: tuple[Path, ...]  # files the export reads (never overwritten)
    extra_metadata: dict[str, str] = field(default_factory=dict)


def _names_from_data(data: str, count: int, what: str) -> list[str]:
    from cnnlab.darknet.cfg import read_data_file
    from cnnlab.darknet.programs import read_names

    data_file = Path(data)
    if not data_file.is_file():
        raise CnnlabError(f"--data {data} does not exist; give the .data file whose names= lists the classes")
    names = read_names(read_data_file(data_file), data_file, ("names", "labels"))
    if len(names) != count:
        raise CnnlabError(f"{data} lists {len(names)} class names but {what} has {count} classes; give the matching .data file")
    return names


def _darknet_source(cfg: str, weights: str | None, data: str | None, flavor: str) -> ExportSource:
    from cnnlab.darknet.classifier import classifier_from_net
    from cnnlab.darknet.model import darknet_preprocess, load_darknet

    if not Path(cfg).is_file():
        raise CnnlabError(f"cfg {cfg} does not exist; write darknet:PATH/TO/NET.cfg")
    if not weights:
        raise CnnlabError(f"darknet:{cfg} needs its trained weights: pass --weights FILE.weights (a cfg alone is untrained)")
    if Path(weights).is_dir():
        raise CnnlabError(f"--weights {weights} is a folder; give the .weights file")
    if not Path(weights).is_file():
        raise CnnlabError(f"weights file {weights} does not exist")
    net = load_darknet(cfg, weights, flavor)
    model = net if net.is_detector else classifier_from_net(net)
    classes = _names_from_data(data, net.classes, cfg) if data else [str(i) for i in range(net.classes)]
    pre, extra = darknet_preprocess(net), {}
    if net.is_detector:  # detector test sees the whole image: letterboxed (pjreddie, letter_box=1) or stretched
        letter = flavor == "pjreddie" or bool(net.net_options.int("letter_box", 0))
        pre = replace(pre, resize_mode="letterbox") if letter else pre
        extra["detector_resize"] = "letterbox" if letter else f"stretch to {net.width}x{net.height} (aspect not kept)"
    w = Path(weights)
    return ExportSource(model, classes, pre, w.with_suffix(""), (Path(cfg), w) + ((Path(data),) if data else ()), extra)


def load_source(spec: str, *, weights: str | None = None, data: str | None = None, flavor: str | None = None, use_ema: bool = True) -> ExportSource:
    """``RUN_DIR`` or ``CKPT.pt`` (a cnnlab checkpoint), or ``darknet:CFG`` with ``weights`` (+ ``data`` for names;
    ``flavor`` defaults to pjreddie)."""
    if spec.startswith(DARKNET):
        return _darknet_source(spec[len(DARKNET) :], weights, data, flavor or "pjreddie")
    from cnnlab.engine import checkpoint as ckpt_mod

    if weights:
        raise CnnlabError("--weights goes with darknet:CFG; a run folder or checkpoint already holds its weights")
    if flavor:
        raise CnnlabError("--flavor goes with darknet:CFG; a run folder or checkpoint already holds how its layers compute")
    if not Path(spec).exists():
        raise CnnlabError(f"{spec} does not exist; give a run folder, a checkpoint .pt, or darknet:CFG --weights W")
    path = ckpt_mod.resolve_path(spec)
    try:
        ckpt = ckpt_mod.load(path)
    except ckpt_mod.NotACheckpoint:
        raise CnnlabError(f"{path} is not a cnnlab checkpoint (a plain state_dict?); export takes a run folder or a cnnlab "
                          "checkpoint: start a run from it first (cnnlab train --model NAME --init FILE)") from None  # fmt: skip
    model, classes, pre = ckpt_mod.model_from_checkpoint(ckpt, use_ema=use_ema)
    if data:
        classes = _names_from_data(data, len(classes), str(path))
    return ExportSource(model.eval(), classes, pre, path.with_suffix(""), (path,), _task_metadata(ckpt))


def _task_metadata(ckpt: dict) -> dict[str, str]:
    """An embedding run's network outputs an embedding, not class scores: the file says so."""
    if (ckpt.get("config") or {}).get("task") != "embedding":
        return {}
    return {"task": "embedding", "embedding": "the network's raw output; L2-normalise it before comparing (cosine "
            "similarity), as cnnlab predict does; classes: the classes it was trained on"}  # fmt: skip
