"""Checkpoints: written atomically, read with ``weights_only=True``, self-describing.

A checkpoint holds the architecture (registry name and builder arguments), the class names and
the preprocessing, so ``valid`` and ``predict`` need nothing but the file. Training state
(optimizer, scheduler, EMA, scaler, RNGs, sampler position) rides along for exact resume.
"""

from __future__ import annotations

import random
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


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    p = resolve_path(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise CnnlabError(f"checkpoint {p} is corrupt or not a cnnlab checkpoint ({type(e).__name__}); re-train or pick another file") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CnnlabError(f"{p} is not a cnnlab checkpoint (no '{FORMAT}' marker); plain state_dicts load with --weights")
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


def load_weights(model: nn.Module, state_dict: dict, source: str) -> None:
    """Strict load with one clear line when the class count (or anything else) differs."""
    own = model.state_dict()
    for key, value in state_dict.items():
        if key in own and _shape(own[key]) != _shape(value):
            if isinstance(model, Classifier) and key.startswith(model.meta.classifier + "."):
                raise CnnlabError(
                    f"{source} was trained for {value.shape[0]} classes but this model has {own[key].shape[0]}; "
                    f"to fine-tune it on the new classes use --finetune {source} (keeps the features, new classifier)"
                )
            raise CnnlabError(f"{source} does not fit this model: {key} is {tuple(value.shape)} there, {tuple(own[key].shape)} here")
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CnnlabError(f"{source} is for a different architecture ({what}); check --model")


def load_features(model: Classifier, state_dict: dict) -> None:
    """Fine-tuning: every weight but the classifier's."""
    prefix = model.meta.classifier + "."
    kept = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
    own = model.state_dict()
    for key, value in kept.items():
        if key in own and _shape(own[key]) != _shape(value):
            raise CnnlabError(f"checkpoint does not fit this model: {key} is {tuple(value.shape)} there, {tuple(own[key].shape)} here")
    missing, unexpected = model.load_state_dict(kept, strict=False)
    missing = [k for k in missing if not k.startswith(prefix)]
    if missing or unexpected:
        raise CnnlabError(f"checkpoint is for a different architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")


def model_from_checkpoint(ckpt: dict, use_ema: bool = True) -> tuple[Classifier, list[str], Preprocess]:
    """The model (EMA weights when the run kept them), its class names and preprocessing."""
    model = build_model(ckpt["arch"])
    weights = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    load_weights(model, weights, "checkpoint")
    return model, list(ckpt["classes"]), Preprocess.from_dict(ckpt["preprocess"])


def weights_from(path: str) -> dict:
    """Model weights from a cnnlab checkpoint (its EMA when kept) or a plain state_dict file (torchvision/timm)."""
    p = resolve_path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CnnlabError(f"{p} is corrupt or not a PyTorch weights file ({type(e).__name__})") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj["ema"] if obj.get("ema") is not None else obj["model"]
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise CnnlabError(f"{p} holds neither a cnnlab checkpoint nor a state_dict")


def start_weights(model: nn.Module, init: str, finetune: str) -> None:
    """``--init`` (every weight, same classes) or ``--finetune`` (all but the classifier) for a new run."""
    if init and finetune:
        raise CnnlabError("give either --init (same classes) or --finetune (new classifier), not both")
    if init:
        load_weights(model, weights_from(init), init)
    if finetune:
        load_features(model, weights_from(finetune))
