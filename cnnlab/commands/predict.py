"""``cnnlab predict IMAGE…``: darknet's output (the time, then the top-5 as ``42.58%: label``).

For a ``--task embedding`` run: the image's embedding (JSON) and its nearest classes by cosine
similarity to the class centres the run stored (``0.9731: label``)."""

from __future__ import annotations

import argparse
import csv
import json
import sys

from cnnlab.commands._inference import add_model_arguments, load_model

NAME = "predict"
HELP = "classify images (or embed them and name the nearest classes) with a trained model (same preprocessing as valid)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files; shards:DIR means every sample of DIR's val split (or of DIR, a split folder)")
    add_model_arguments(p)
    p.add_argument("-t", "--top", type=int, default=5, help="how many classes to print (default: 5)")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")


def run(args: argparse.Namespace) -> int:
    from cnnlab.data.sources.base import BadImage
    from cnnlab.engine.device import pick_device
    from cnnlab.engine.predict import Predictor, format_darknet
    from cnnlab.engine.task import task_of

    model, classes, pre, ckpt = load_model(args)
    centres = None
    if task_of(ckpt) == "embedding":
        from cnnlab.tasks.embedding import centres_of

        centres = centres_of(ckpt, args.checkpoint)
    predictor = Predictor(model, classes, pre, pick_device(args.device), centres)
    results, failed = [], []
    for path, data in _expand(args.images):
        try:
            pred = predictor(path, args.top, data)
        except (BadImage, OSError) as e:
            failed.append(path)
            print(f"{path}: skipped: {e}", file=sys.stderr)
            continue
        results.append(pred)
        if args.format == "text":
            print(format_darknet(pred), flush=True)
    score = "probability" if centres is None else "similarity"
    if args.format == "json":
        print(json.dumps([_json(r, score) for r in results], indent=2))
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(["path", "rank", "label", "index", score])
        for r in results:
            for rank, (label, index, prob) in enumerate(r.top, 1):
                w.writerow([r.path, rank, label, index, f"{prob:.6f}"])
    if failed:
        print(f"skipped {len(failed)} of {len(results) + len(failed)} image(s) that could not be read", file=sys.stderr)
        return 1
    return 0


def _json(r, score: str) -> dict:
    """A classifier's ``top`` classes by probability; an embedding model's ``embedding`` and
    ``nearest`` classes by cosine similarity to their centres."""
    classes = [{"label": label, "index": i, score: p} for label, i, p in r.top]
    if r.embedding is None:
        return {"path": r.path, "seconds": r.seconds, "top": classes}
    return {"path": r.path, "seconds": r.seconds, "embedding": r.embedding, "nearest": classes}


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
