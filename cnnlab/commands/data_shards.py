"""``cnnlab data shards``: any dataset cnnlab reads → WebDataset tar shards for the fast loader."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

NAME = "shards"
HELP = "write a dataset (built-in, class folders, ILSVRC/URL outputs, MNIST idx, CIFAR) as WebDataset shards"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="dataset name or folder, as --data takes it (e.g. mnist5k, ~/imagenet)")
    p.add_argument("--out", type=Path, required=True, help="folder to write; gets OUT/train and OUT/val (train with --data shards:OUT)")
    p.add_argument("--split", choices=["train", "val", "both"], default="both", help="which split(s) to write (default: both)")
    p.add_argument("--resize", type=int, default=256, metavar="SHORT",
                   help="shrink so the shorter side is SHORT pixels (never enlarges; 0 keeps sizes; default 256, the ImageNet recipe)")  # fmt: skip
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    p.add_argument("--format", dest="image_format", choices=["auto", "jpg", "png"], default="auto",
                   help="auto: PNG for images of 64 px or less (MNIST, CIFAR), JPEG otherwise")  # fmt: skip
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="writer processes")
    p.add_argument("--seed", type=int, default=0, help="order of samples across shards (and the hold-out of plain class folders)")
    p.add_argument("--boxes", default="", metavar="CSV", help="bounding boxes from `cnnlab data bbox`, stored in each sample's JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from cnnlab.data.datasets import open_split
    from cnnlab.data.shards import format as fmt
    from cnnlab.data.shards.writer import check_out, write_shards

    splits = ["train", "val"] if args.split == "both" else [args.split]
    jobs = []
    for split in splits:
        source = open_split(args.source, split, seed=args.seed)
        settings = fmt.Settings(
            source=args.source, split=split, samples=len(source), classes=list(source.classes), resize=args.resize,
            quality=args.quality, image_format=args.image_format, shard_size=args.shard_size, seed=args.seed, boxes=args.boxes,
        )  # fmt: skip
        check_out(args.out / split, settings)  # every split's folder before the first is written
        jobs.append((source, settings))
    for source, settings in jobs:
        write_shards(source, args.out / settings.split, settings, workers=args.workers, progress=args.progress)
    print(f"train from them with: cnnlab train --data shards:{args.out} --model MODEL")
    return 0
