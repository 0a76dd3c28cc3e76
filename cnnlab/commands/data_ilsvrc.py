"""``cnnlab data ilsvrc``: ILSVRC2012 train/val tars + devkit → DIR/train/<wnid>, DIR/val/<wnid>."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "ilsvrc"
HELP = "ILSVRC2012 train/val tars and devkit to class folders (streamed, resumable per class)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", type=Path, help="ILSVRC2012_img_train.tar (a tar of per-class tars)")
    p.add_argument("--val", type=Path, help="ILSVRC2012_img_val.tar (flat)")
    p.add_argument("--devkit", type=Path, required=True, help="ILSVRC2012_devkit_t12.tar.gz (or its folder)")
    p.add_argument("--bbox", type=Path, help="ILSVRC2012_bbox_train_v2.tar.gz: also write DIR/boxes.csv")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--format", choices=["folders"], default="folders", help="output layout (default: folders)")
    p.add_argument("--grayscale", choices=["keep", "rgb"], default="keep", help="keep gray JPEGs or convert to RGB")
    p.add_argument("--resize", type=int, metavar="SHORT", help="shrink so the shorter side is SHORT pixels")
    p.add_argument("--workers", type=int, default=2, help="decode threads (default 2)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from cnnlab.data.imagenet.ilsvrc import Options, prepare_ilsvrc
    from cnnlab.errors import CnnlabError

    if args.resize is not None and args.resize < 1:
        raise CnnlabError(f"--resize {args.resize} must be a positive pixel count, e.g. --resize 256")
    opts = Options(grayscale=args.grayscale, resize_short=args.resize, workers=max(1, args.workers),
                   progress=not args.no_progress and sys.stderr.isatty())
    result = prepare_ilsvrc(args.out, args.devkit, args.train, args.val, args.bbox, opts)
    counts = ", ".join(f"{k}={v}" for k, v in result["counts"].items())
    print(f"{args.out}: kept {result['kept']} images ({counts}); details in {args.out / 'report.json'}")
    damaged = result["failures"].get("corrupt_archive", [])
    if damaged:
        # Exit 1: the output is usable but not complete. Classes read in full are kept; a re-run with a
        # repaired archive redoes only the others.
        print(f"cnnlab data ilsvrc: {len(damaged)} damaged archive part(s), e.g. {damaged[0]}: "
              f"re-run with a repaired archive to complete them", file=sys.stderr)  # fmt: skip
        return 1
    return 0
