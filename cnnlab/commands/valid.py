"""``cnnlab valid``: the checkpoint's task scores a labelled set (:meth:`Task.evaluation`): for a
classifier top-1/top-5, loss, confusion matrix, per-class P/R/F1 and Cohen's kappa; for an embedding
run, verification ROC AUC and retrieval recall@1/5 (on any labelled set, even of classes the run
never saw); for a detection run, mAP@0.5 with darknet's ``-map`` table."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.commands._inference import add_engine_arguments, add_model_arguments, engine_options, load_model, source_file
from cnnlab.errors import CnnlabError
from cnnlab.fileio import write_json_atomic

if TYPE_CHECKING:
    from cnnlab.data.sources.base import ImageSource

NAME = "valid"
HELP = "evaluate a checkpoint on a dataset split"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--data", help="dataset name or path (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    p.add_argument("--tencrop", action="store_true", help="average the softmax over ten crops (corners, centre, mirrored)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (default: 64)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding worker processes; 0 decodes in this one (default: 2)")
    p.add_argument("--json", metavar="PATH", help="write the full report here (default: valid-<split>.json in the checkpoint's run directory, valid-<data>-<split>.json for a set other than the run's)")
    p.add_argument("--force", action="store_true", help="let --json replace an existing file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(p)


def run(args: argparse.Namespace) -> int:
    from cnnlab.data.loader import BadImageLog, make_loader
    from cnnlab.data.transforms import DeviceNormalize, eval_transform, tencrop_transform
    from cnnlab.engine.device import pick_device
    from cnnlab.engine.evaluate import evaluate
    from cnnlab.engine.inference import prepare
    from cnnlab.engine.logger import Progress
    from cnnlab.engine.task import inference_task

    if args.batch_size < 1:
        raise CnnlabError(f"--batch-size {args.batch_size}: give 1 or more images per forward")
    if args.workers < 0:
        raise CnnlabError(f"--workers {args.workers}: give 0 (decode in this process) or more worker processes")
    if args.json:
        _check_json_target(Path(args.json), args.force, _inputs(args))  # before the evaluation, not after it
        if not _writable_folder(Path(args.json).parent):
            raise CnnlabError(f"--json {args.json}: cannot write in {Path(args.json).parent}; give a file in a folder you can write")
    data = args.data
    if not args.checkpoint and args.model and args.weights and not data:
        raise CnnlabError("which data? pass --data NAME_OR_PATH (its classes also name the outputs, unless --labels FILE does)")
    named_by_data = _data_named_classes(args)
    model, classes, pre, ckpt = load_model(args, named_by_data.classes if named_by_data is not None else None)
    if named_by_data is not None:
        print(f"classes: the {len(classes)} of {data} in its order (pass --labels FILE if {args.weights} was trained with another)")
    if data is None:
        data = (ckpt.get("config") or {}).get("data")
        if not data:
            raise CnnlabError("which data? pass --data NAME_OR_PATH")
    device = pick_device(args.device)
    # the checkpoint's task says how the set is scored (classes mapped onto the model's, or not) and by what
    task = inference_task(ckpt, classes, device)
    opened = named_by_data if named_by_data is not None else task.open_data(data, args.split)
    source, evaluator = task.evaluation(_as_trained(opened, data, ckpt))
    # the engine's copy of the model: BN folded once, packed convs, channels_last, inference_mode
    model = prepare(model, pre.input_size, device, engine_options(args, args.batch_size * (10 if args.tencrop else 1)),
                    cache_key=source_file(args))  # fmt: skip
    loader = task.eval_loader(source, model, args.batch_size, args.workers, device.type == "cuda")  # detection: images with their boxes
    if loader is not None and args.tencrop:
        raise CnnlabError("--tencrop averages a classifier's softmax; a detection run is scored by mAP without it")
    if loader is None:
        tf = tencrop_transform(pre) if args.tencrop else eval_transform(pre)
        loader = make_loader(source, tf, args.batch_size, shuffle=False, workers=args.workers, pin_memory=device.type == "cuda")
    bad = BadImageLog(max_fraction=1.0)
    progress = Progress("valid", len(source), 0, "img", sys.stderr, not args.no_progress)
    report = evaluate(model, loader, DeviceNormalize(pre).to(device), evaluator, device, None, bad, progress)
    print(report.table())
    if bad.bad:
        print(bad.report())
    out = Path(args.json) if args.json else _default_json(args, data, (ckpt.get("config") or {}).get("data"))
    if out is not None and not args.json and not _writable_folder(out.parent):
        print(f"report not written: {out.parent} is read-only (pass --json PATH to keep it elsewhere)", file=sys.stderr)
        out = None
    if out is not None:
        doc = report.to_dict() | {"data": data, "split": args.split, "tencrop": args.tencrop, "bad_images": list(bad.bad),
                                  "backend": args.backend, "precision": args.precision}  # fmt: skip
        write_json_atomic(out, doc)
        print(f"report: {out}")
    return 0


def _data_named_classes(args: argparse.Namespace) -> ImageSource | None:
    """A plain state_dict (--model/--weights) without --labels is named by the evaluated set's classes."""
    if args.checkpoint or args.labels or not (args.model and args.weights and args.data):
        return None
    from cnnlab.data.datasets import open_split

    return open_split(args.data, args.split)


def _as_trained(source, data: str, ckpt: dict):
    """The run's own data is scored on the classes it trained on (``--classes``), not on all of them."""
    config = ckpt.get("config") or {}
    if not config.get("classes") or data != config.get("data"):
        return source
    from cnnlab.data.sources.subset import ClassSubset, pick_classes

    return ClassSubset(source, pick_classes(source, config["classes"]))


def _inputs(args: argparse.Namespace) -> list[Path]:
    """The files the command reads (the report must never replace one of them)."""
    from cnnlab.engine.checkpoint import resolve_path

    if args.checkpoint:
        return [resolve_path(args.checkpoint)]
    return [Path(f) for f in (args.weights, args.labels) if f]


def _check_json_target(path: Path, force: bool, inputs: list[Path]) -> None:
    """``--json`` names a file the user may already have: replace it only with ``--force``, and never
    one the command reads. (The default ``RUN/valid-<split>.json`` is this command's own report and is
    refreshed each time.)"""
    if path.is_dir():
        raise CnnlabError(f"--json {path} is a folder: give a file name, e.g. {path / 'valid.json'}")
    if path.exists() and any(i.exists() and os.path.samefile(path, i) for i in inputs):
        raise CnnlabError(f"--json {path} is one of the command's inputs; give another file name (even --force does not overwrite an input)")
    if path.exists() and not force:
        raise CnnlabError(f"--json {path} exists: pass --force to replace it, or give another file name")


def _writable_folder(folder: Path) -> bool:
    """The nearest existing folder on the way to ``folder`` lets this user create files."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK)


def _default_json(args: argparse.Namespace, data: str, trained_on: str | None) -> Path | None:
    """``RUN/valid-<split>[-tencrop].json`` when the checkpoint sits in a run directory (``valid-<data>-
    <split>…`` for a set other than the run's own, so one report does not replace another's); else none
    (never a file in the current folder that could clobber one of the user's)."""
    from cnnlab.engine.checkpoint import resolve_path

    if not args.checkpoint:
        return None
    ckpt = resolve_path(args.checkpoint).resolve()
    if ckpt.parent.name != "checkpoints" or not (ckpt.parent.parent / "config.yaml").is_file():
        return None
    other = "" if data == trained_on else re.sub(r"[^\w.-]+", "_", Path(data.rstrip("/")).name) + "-"
    return ckpt.parent.parent / f"valid-{other}{args.split}{'-tencrop' if args.tencrop else ''}.json"
