"""``cnnlab predict IMAGE…``: what the checkpoint's task predicts (:meth:`Task.predictor`). For a
classifier, darknet's output (the time, then the top-5 as ``42.58%: label``); for a ``--task
embedding`` run, the image's embedding (JSON) and its nearest classes by cosine similarity to the
class centres the run stored (``0.9731: label``); for a ``--task detect`` run, its boxes in AlexeyAB's
``detector test -ext_output`` layout."""

from __future__ import annotations

import argparse
import csv
import json
import sys

from cnnlab.commands._inference import add_engine_arguments, add_model_arguments, engine_options, load_model, source_file
from cnnlab.errors import CnnlabError

NAME = "predict"
HELP = "classify images, embed them and name the nearest classes, or find boxes, with a trained model (same preprocessing as valid)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files; shards:DIR means every sample of DIR's val split (or of DIR, a split folder)")
    add_model_arguments(p)
    p.add_argument("-t", "--top", type=int, default=5, help="how many classes to print (default: 5)")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text", help="text (darknet-style lines, default), json (a list with one object per image) or csv (a row per printed class or box)")
    p.add_argument("--thresh", type=float, help="detection runs: the probability a box needs to be printed (default: 0.25, darknet's)")
    add_engine_arguments(p)


def run(args: argparse.Namespace) -> int:
    from cnnlab.engine.device import pick_device
    from cnnlab.engine.inference import prepare
    from cnnlab.engine.task import inference_task

    if args.top < 1:
        raise CnnlabError(f"--top {args.top}: give how many classes to print, 1 or more")
    model, classes, pre, ckpt = load_model(args)
    device = pick_device(args.device)
    model = prepare(model, pre.input_size, device, engine_options(args), cache_key=source_file(args))  # BN folded once, packed, channels_last
    # the checkpoint's task makes the predictor; its outputs print themselves (text, JSON, CSV rows)
    predictor = inference_task(ckpt, classes, device).predictor(model, pre, device, ckpt, args.checkpoint or args.weights)
    if args.thresh is not None:
        if not hasattr(predictor, "thresh"):
            raise CnnlabError("--thresh is for detection runs (boxes); a classifier prints its --top classes")
        predictor.thresh = args.thresh
    results, failed = [], []
    for path, pred in _predictions(predictor, _expand(args.images), args.top):
        if isinstance(pred, Exception):
            failed.append(path)
            print(f"{path}: skipped: {pred}", file=sys.stderr)
            continue
        results.append(pred)
        if args.format == "text":
            print(pred.text(), flush=True)
    if args.format == "json":
        print(json.dumps([r.to_json() for r in results], indent=2))
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(predictor.csv_header)
        for r in results:
            w.writerows(r.csv_rows())
    if failed:
        print(f"skipped {len(failed)} of {len(results) + len(failed)} image(s) that could not be read", file=sys.stderr)
        return 1
    return 0


def _predictions(predictor, items, top: int):
    """(path, output or the exception that skipped it) per item, in order; a predictor that can
    decode on its own (``load`` / ``from_image``) gets its images decoded ahead of the network."""
    from cnnlab.data.sources.base import BadImage
    from cnnlab.engine.prefetch import prefetch

    if not hasattr(predictor, "load"):
        for path, data in items:
            try:
                yield path, predictor(path, top, data)
            except (BadImage, OSError) as e:
                yield path, e
        return
    for got in prefetch(items, lambda item: predictor.load(*item), errors=(BadImage, OSError)):
        path = got.item[0]
        yield path, (got.error if got.error is not None else predictor.from_image(path, got.value, top))


def _expand(images: list[str]):
    """(name, None) for files; (sample name, encoded bytes) for each sample of a ``shards:DIR``."""
    for arg in images:
        if not arg.startswith("shards:"):
            yield arg, None
            continue
        from pathlib import Path

        from cnnlab.data.shards.source import ShardSource, open_shards

        root = Path(arg[len("shards:") :])
        source = ShardSource(root) if (root / "manifest.json").is_file() else open_shards(str(root), "val")
        for i in range(len(source)):
            yield source.describe(i), source.encoded(i)
