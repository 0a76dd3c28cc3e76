"""``cnnlab data darknet DIR``: labels/names/train/valid lists and a .data file for darknet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "darknet"
HELP = "write labels.txt, names.list, train.list, valid.list and NAME.data for a class-folder DIR"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="prepared folder with train/<class>/ (and val/<class>/)")
    p.add_argument("--name", default="imagenet", help="base name of the .data file (default: imagenet)")
    p.add_argument("--force", action="store_true", help="replace lists and a .data file written before")


def run(args: argparse.Namespace) -> int:
    from cnnlab.data.imagenet.darknet_lists import write_darknet_lists

    info = write_darknet_lists(args.dir, args.name, force=args.force, warn=lambda line: print(line, file=sys.stderr))
    print(f"{info['data']}: {info['classes']} classes, {info['train']} train, {info['valid']} valid images")
    return 0
