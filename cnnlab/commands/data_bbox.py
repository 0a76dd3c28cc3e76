"""``cnnlab data bbox``: PASCAL VOC XML boxes (folder or tar) → CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "bbox"
HELP = "PASCAL VOC XML bounding boxes (folder or tar) to filename,wnid,xmin,ymin,xmax,ymax CSV"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, help="folder of XMLs or ILSVRC2012_bbox_*.tar.gz")
    p.add_argument("--out", type=Path, required=True, help="CSV file to write, e.g. boxes.csv")
    p.add_argument("--relative", action="store_true", help="write coordinates as fractions of the image size")


def run(args: argparse.Namespace) -> int:
    from cnnlab.data.imagenet.bbox import convert_bboxes

    fixes = convert_bboxes(args.source, args.out, relative=args.relative)
    print(f"{args.out}: " + ", ".join(f"{k}={v}" for k, v in fixes.items()))
    return 0
