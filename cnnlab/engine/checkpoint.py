"""Checkpoints: written atomically, read with ``weights_only=True``, self-describing.

A checkpoint holds the architecture (registry name and builder arguments), the class names and
the preprocessing, so ``valid`` and ``predict`` need nothing but the file. Training state
(optimizer, scheduler, EMA, scaler, RNGs, sampler position) rides along for exact resume.
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_writer
from cnnlab.model_meta import Preprocess
from cnnlab.models import Classifier, create_model

FORMAT = "cnnlab-checkpoint/1"


def save_atomic(obj: dict, path: Path) -> None:
    """Hidden temp file in the same folder, fsync, then rename (:func:`cnnlab.fileio.atomic_writer`):
    a kill never leaves half a file, a full disk is one line naming the file."""
    with atomic_writer(path) as f:
        torch.save(obj, f)


def resolve_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (→ its best.pt, else last.pt)."""
    p = Path(path)
    if p.is_dir():
        for name in ("checkpoints/best.pt", "checkpoints/last.pt", "best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CnnlabError(f"no checkpoint in {p}: expected {p}/checkpoints/best.pt or last.pt")
    if not p.exists():
        raise CnnlabError(f"checkpoint {p} does not exist")
    return p


EXPORTED = {".onnx": "ONNX", ".xml": "OpenVINO IR", ".bin": "OpenVINO weights", ".ts": "TorchScript"}  # cnnlab export's files


class NotACheckpoint(CnnlabError):
    """A readable file without cnnlab's checkpoint marker (a plain state_dict, most often)."""


class ClassCountMismatch(CnnlabError):
    """Weights whose classifier has another number of classes (``trained``) than the model built for them."""

    def __init__(self, message: str, trained: int) -> None:
        super().__init__(message)
        self.trained = trained


def _refuse_other_formats(p: Path) -> None:
    """Files torch cannot read that users hand over as weights: say what they are and what takes them."""
    if p.suffix == ".weights":  # darknet's format has no magic number; its suffix is what users keep
        raise CnnlabError(f"{p} is darknet weights, not PyTorch's: `cnnlab darknet convert CFG {p} OUT.pt` makes a cnnlab "
                          "checkpoint of them (or use the `cnnlab darknet` programs with its cfg)")  # fmt: skip
    if p.suffix in EXPORTED:
        raise CnnlabError(f"{p} is an exported model ({EXPORTED[p.suffix]}), not a cnnlab checkpoint: give the checkpoint "
                          "it was exported from (--backend onnxruntime|openvino runs it through those runtimes)")  # fmt: skip


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    p = resolve_path(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        _refuse_other_formats(p)
        raise CnnlabError(f"checkpoint {p} is corrupt or not a cnnlab checkpoint ({type(e).__name__}); re-train or pick another file") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise NotACheckpoint(f"{p} is not a cnnlab checkpoint (no '{FORMAT}' marker); plain state_dicts load with --model NAME --weights FILE")
    return ckpt


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's state as tensors so that weights_only loading accepts it
        "numpy": _numpy_state_to_tensors(np.random.get_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    np.random.set_state(_numpy_state_from_tensors(state["numpy"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state_to_tensors(s: tuple) -> list:
    return [s[0], torch.from_numpy(s[1].astype(np.int64)), s[2], s[3], s[4]]


def _numpy_state_from_tensors(s: list) -> tuple:
    return (s[0], s[1].numpy().astype(np.uint32), s[2], s[3], s[4])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def arch_of(model: nn.Module, model_kwargs: dict | None = None) -> dict:
    return {
        "name": model.meta.name,
        "num_classes": model.num_classes,
        "in_chans": model.meta.preprocess.channels,
        # models built from a file (darknet cfgs) carry the file's content in builder_kwargs
        "kwargs": {**model.meta.extra.get("builder_kwargs", {}), **(model_kwargs or {})},
    }


def build_model(arch: dict) -> Classifier:
    return create_model(arch["name"], num_classes=arch["num_classes"], in_chans=arch["in_chans"], **arch.get("kwargs", {}))


def _shape(v: Any) -> tuple | None:
    """A state_dict entry's shape; None for extra state (e.g. a darknet net's .weights header)."""
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def load_weights(model: nn.Module, state_dict: dict, source: str) -> list[str]:
    """Strict load with one clear line when the class count (or anything else) differs; returns the
    notes worth printing (an auxiliary head the weights do not have)."""
    state_dict = model.adapt_state_dict(state_dict) if isinstance(model, Classifier) else state_dict
    own = model.state_dict()
    for key, value in state_dict.items():
        if key in own and _shape(own[key]) != _shape(value):
            theirs, ours = _shape(value), _shape(own[key])
            other_count = theirs is not None and ours is not None and theirs[1:] == ours[1:]  # only the output count differs
            if isinstance(model, Classifier) and key.startswith(model.meta.classifier + ".") and other_count:
                raise ClassCountMismatch(
                    f"{source} was trained for {value.shape[0]} classes but this model has {own[key].shape[0]}; "
                    f"to fine-tune it on the new classes use --finetune {source} (keeps the features, new classifier)",
                    trained=value.shape[0],
                )
            if key == _first_conv(own) and theirs is not None and ours is not None and theirs[:1] + theirs[2:] == ours[:1] + ours[2:]:
                raise CnnlabError(f"{source} was trained on {theirs[1]}-channel images and this model takes {ours[1]}-channel "
                                  f"ones ({key}, set by the data); use data with {theirs[1]} channels")  # fmt: skip
            raise CnnlabError(f"{source} does not fit this model: {key} is {_shape(value)} there, {_shape(own[key])} here "
                              "(a different architecture or size); check --model")  # fmt: skip
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    aux, missing = _split_aux(model, missing)
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CnnlabError(f"{source} is for a different architecture ({what}); check --model")
    return [_aux_note(source, aux)] if aux else []


def _first_conv(state_dict: dict) -> str | None:
    """The key of the first 4-d weight: the layer whose input width is the image's channel count."""
    return next((k for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.ndim == 4), None)


def _split_aux(model: nn.Module, missing: list[str]) -> tuple[list[str], list[str]]:
    """Missing keys of whole auxiliary heads (timm's inception_v3 has none): those heads only train,
    never change an output, and start fresh; any other missing key is an error."""
    if not isinstance(model, Classifier):
        return [], missing
    heads = [h + "." for h in model.head_modules()[1:]]
    in_heads = {k for k in missing if k.startswith(tuple(heads))}
    whole = [h for h in heads if any(k.startswith(h) for k in in_heads) and all(k in in_heads for k, _ in model.named_parameters() if k.startswith(h))]
    aux = [k for k in in_heads if k.startswith(tuple(whole))]
    return sorted({k.split(".")[0] for k in aux}), [k for k in missing if k not in aux]


def _aux_note(source: str, heads: list[str]) -> str:
    return f"{source} has no auxiliary classifier: {', '.join(heads)} start(s) from fresh weights (used in training only, no output changes)"


def load_features(model: Classifier, state_dict: dict, source: str = "checkpoint") -> list[str]:
    """Fine-tuning: every weight but the classifier's, which starts fresh; returns the line saying so."""
    state_dict = model.adapt_state_dict(state_dict)
    prefix = model.meta.classifier + "."
    old_head = state_dict.get(prefix + "weight")
    kept = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
    own = model.state_dict()
    for key, value in kept.items():
        if key in own and _shape(own[key]) != _shape(value):
            raise CnnlabError(f"{source} does not fit this model: {key} is {tuple(value.shape)} there, {tuple(own[key].shape)} here")
    missing, unexpected = model.load_state_dict(kept, strict=False)
    aux, missing = _split_aux(model, [k for k in missing if not k.startswith(prefix)])
    if missing or unexpected:
        raise CnnlabError(f"{source} is for a different architecture (missing {missing[:3]}, unexpected {unexpected[:3]}); check --model")
    was = f"{old_head.shape[0]} outputs" if isinstance(old_head, torch.Tensor) else "another classifier"
    notes = [f"new classifier: {model.meta.classifier} starts fresh with {model.num_classes} outputs ({source} had {was}, not loaded)"]
    return notes + ([_aux_note(source, aux)] if aux else [])


def model_from_checkpoint(ckpt: dict, use_ema: bool = True) -> tuple[Classifier, list[str], Preprocess]:
    """The model (EMA weights when the run kept them), its class names and preprocessing."""
    if not use_ema and ckpt.get("ema") is None:  # said, so a user comparing raw with EMA weights knows there is no pair
        print("--no-ema: this run kept no EMA; its one set of weights is used", file=sys.stderr)
    model = build_model(ckpt["arch"])
    weights = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    load_weights(model, weights, "checkpoint")
    return model, list(ckpt["classes"]), Preprocess.from_dict(ckpt["preprocess"])


def weights_from(path: str) -> dict:
    """Model weights from a cnnlab checkpoint (its EMA when kept) or a plain state_dict file (torchvision/timm)."""
    return read_source(path).weights


@dataclass
class Source:
    """What a run can start from: the weights, and for a cnnlab checkpoint its class names and the
    preprocessing its weights were trained with (None for another trainer's state_dict)."""

    weights: dict
    classes: list[str] | None = None
    preprocess: Preprocess | None = None


def read_source(path: str) -> Source:
    p = resolve_path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        _refuse_other_formats(p)
        raise CnnlabError(f"{p} is corrupt or not a PyTorch weights file ({type(e).__name__})") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        pre = Preprocess.from_dict(obj["preprocess"]) if obj.get("preprocess") else None
        return Source(obj["ema"] if obj.get("ema") is not None else obj["model"], list(obj.get("classes") or []) or None, pre)
    # other trainers' checkpoints hold the state_dict under one of these keys (timm's load_state_dict looks
    # for the same ones), and DDP / torch.compile prefix every key: timm's clean_state_dict strips those
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        from timm.models import clean_state_dict

        return Source(clean_state_dict(obj))
    raise CnnlabError(f"{p} holds neither a cnnlab checkpoint nor a state_dict (a dict of tensors, or one under "
                      "'state_dict' / 'model' / 'state_dict_ema' / 'model_ema')")  # fmt: skip


def start_weights(model: nn.Module, init: str, finetune: str, classes: list[str] | None = None) -> tuple[list[str], Preprocess | None]:
    """``--init`` (every weight, same classes) or ``--finetune`` (all but the classifier) for a new run:
    from a cnnlab checkpoint, a torchvision/timm state_dict, or (darknet cfgs) a darknet ``.weights``
    file — a ``partial`` backbone included. ``classes``: the run's class names, which a cnnlab
    checkpoint given to ``--init`` must have in the same order. Returns the lines to print and the
    preprocessing the weights were trained with (a cnnlab checkpoint's; else None)."""
    if init and finetune:
        raise CnnlabError("give either --init (same classes) or --finetune (new classifier), not both")
    path = init or finetune
    if not path:
        return [], None
    if is_darknet_weights(path):
        return _start_darknet(model, path, full=bool(init)), None
    src = read_source(path)
    if init:
        notes = load_weights(model, src.weights, init)
        _check_same_classes(init, src.classes, classes)
        return notes, src.preprocess
    if not isinstance(model, Classifier):
        raise CnnlabError(f"--finetune puts a new classifier on a classifier; {type(model).__name__} is not one (use --init)")
    return load_features(model, src.weights, finetune), src.preprocess


def _check_same_classes(init: str, trained_on: list[str] | None, classes: list[str] | None) -> None:
    """--init keeps the classifier, so output i must still mean class i: the same names in the same order."""
    if not trained_on or classes is None or list(trained_on) == list(classes):
        return
    if len(trained_on) != len(classes):
        return  # the classifier's shape already differs: load_weights said so
    order = "the same classes in another order" if sorted(trained_on) == sorted(classes) else "other classes"
    raise CnnlabError(f"{init} was trained on classes {_some(trained_on)} and this run has {order} ({_some(classes)}): "
                      f"--init keeps the classifier, whose outputs would name the wrong classes; use --finetune {init} "
                      "(a new classifier) or --classes in the checkpoint's order")  # fmt: skip


def _fits_as_backbone(net: nn.Module, path: str) -> bool:
    """Whether darknet weights that do not fit the whole net load as its backbone (on a copy)."""
    import copy

    from cnnlab.darknet.classifier import classifier_index

    try:
        copy.deepcopy(net).load_weights(path, allow_partial=True, upto=classifier_index(net))
        return True
    except CnnlabError:
        return False


def _some(names: list[str]) -> str:
    return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")


def is_darknet_weights(path: str) -> bool:
    """A ``.weights`` file or a ``partial`` backbone (``darknet19_448.conv.23``)."""
    name = Path(path).name
    return name.endswith(".weights") or bool(re.search(r"\.conv\.\d+$", name))


def _start_darknet(model: nn.Module, path: str, full: bool) -> list[str]:
    net = getattr(model, "net", None)
    if net is None or not hasattr(net, "load_weights"):
        raise CnnlabError(f"{path} is a darknet weights file; it loads into a darknet cfg model (--model darknet:CFG)")
    from cnnlab.darknet.classifier import classifier_index

    k = None if full else classifier_index(net)
    try:
        net.load_weights(path, allow_partial=not full, upto=k)
    except CnnlabError:
        if full and _fits_as_backbone(net, path):
            raise CnnlabError(f"{path} fits this cfg up to its classifier, which has another number of outputs than this run's "
                              f"{model.num_classes} classes; use --finetune {path} (a new classifier layer)") from None  # fmt: skip
        raise
    loaded = net.loaded_layers
    line = f"loaded darknet weights {path}: layers 0-{loaded - 1} of {len(net.layers)}"
    if not full:
        line += f"; layer {k} [{net.sections[k + 1].type}] is the new classifier ({model.num_classes} outputs), layers {loaded}-{len(net.layers) - 1} start fresh"
    return [line]
