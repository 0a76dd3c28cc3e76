"""What ``valid`` and ``predict`` share: where the model, its classes and preprocessing come from."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.errors import CnnlabError

if TYPE_CHECKING:  # torch is imported when a model is loaded, not when the CLI parser is built
    from cnnlab.engine.inference import InferenceOptions
    from cnnlab.model_meta import Preprocess
    from cnnlab.models import Classifier


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--checkpoint", help="cnnlab checkpoint (.pt) or run directory (uses its best.pt)")
    p.add_argument("--model", help="architecture name, with --weights: a plain state_dict (e.g. torchvision's)")
    p.add_argument("--weights", help="state_dict file for --model")
    p.add_argument("--labels", help="class names, one per line (with --model/--weights)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even if the run kept an EMA")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")


def add_engine_arguments(p: argparse.ArgumentParser, batch: int | None = None) -> None:
    """The inference engine's options (:mod:`cnnlab.engine.inference`), the same on every command that predicts."""
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (default; today's outputs) or bf16 where the CPU computes it natively (faster, ~1e-2 relative)")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default="torch",
                   help="torch (default), or the same network exported once (cached beside the weights) and run by onnxruntime/OpenVINO")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the prepared network (inductor; needs g++; the first run compiles, later runs reuse its cache)")
    if batch is not None:
        p.add_argument("--batch", type=int, default=batch, dest="infer_batch", help=f"images per network call (default {batch})")


def engine_options(args: argparse.Namespace, batch: int = 1) -> "InferenceOptions":
    from cnnlab.engine.inference import InferenceOptions

    n = getattr(args, "infer_batch", None) or batch
    if n < 1:
        raise CnnlabError(f"--batch must be at least 1 (got {n})")
    return InferenceOptions(precision=args.precision, backend=args.backend, compile=args.compile, batch=n)


def source_file(args: argparse.Namespace) -> str | None:
    """The checkpoint or weights file the model came from (an exported copy is cached beside it)."""
    if args.checkpoint:
        from cnnlab.engine.checkpoint import resolve_path

        return str(resolve_path(args.checkpoint))
    return args.weights


def read_labels(path: Path) -> list[str]:
    """Class names, one per line (blank lines skipped): each named once, at least one."""
    if not path.is_file():
        raise CnnlabError(f"labels file {path} does not exist")
    try:
        classes = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise CnnlabError(f"labels file {path} is not UTF-8 text; give a text file with one class name per line") from None
    if not classes:
        raise CnnlabError(f"labels file {path} names no classes; write one class name per line")
    if len(set(classes)) != len(classes):
        twice = next(c for i, c in enumerate(classes) if c in classes[:i])
        raise CnnlabError(f"labels file {path} names {twice!r} twice; each class needs its own name")
    return classes


def load_model(args: argparse.Namespace, classes_hint: list[str] | None = None) -> tuple[Classifier, list[str], Preprocess, dict]:
    """(model, class names, preprocessing, checkpoint-or-empty) from the command's arguments."""
    from cnnlab.engine import checkpoint as ckpt_mod
    from cnnlab.models import create_model

    if args.checkpoint:
        if args.model or args.weights:
            raise CnnlabError("give either --checkpoint or --model with --weights, not both")
        if getattr(args, "labels", None):
            raise CnnlabError("--labels goes with --model/--weights; a checkpoint names its own classes (drop --labels)")
        ckpt = ckpt_mod.load(args.checkpoint)
        model, classes, pre = ckpt_mod.model_from_checkpoint(ckpt, use_ema=not args.no_ema)
        return model, classes, pre, ckpt
    if not (args.model and args.weights):
        raise CnnlabError("which model? pass --checkpoint RUN_DIR_OR_PT, or --model NAME --weights STATE_DICT")
    if args.labels:
        classes = read_labels(Path(args.labels))
    elif classes_hint is not None:
        classes = classes_hint
    else:
        raise CnnlabError("--model/--weights need class names: pass --labels FILE (one name per line)")
    model = create_model(args.model, num_classes=len(classes))
    try:
        ckpt_mod.load_weights(model, ckpt_mod.weights_from(args.weights), args.weights)
    except ckpt_mod.ClassCountMismatch as e:
        where = f"the labels file {args.labels} names" if args.labels else "the data has"
        raise CnnlabError(f"{where} {len(classes)} classes but {args.weights} was trained for {e.trained}; "
                          f"pass --labels FILE with the {e.trained} class names it was trained with, one per line") from None  # fmt: skip
    return model, classes, model.meta.preprocess, {}
