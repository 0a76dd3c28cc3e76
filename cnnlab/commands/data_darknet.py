"""``cnnlab data darknet DIR``: labels/names/train/valid lists and a .data file for darknet."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "darknet"
HELP = "write labels.txt, names.list, train.list, valid.list and NAME.data for a class-folder DIR"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="prepared folder with train/<class>/ (and val/<class>/)")
    p.add_argument("--name", default="imagenet", help="base name of the .data file (default: imagenet)")


def run(args: argparse.Namespace) -> int:
    from cnnlab.data.imagenet.darknet_lists import write_darknet_lists

    info = write_darknet_lists(args.dir, args.name)
    print(f"{info['data']}: {info['classes']} classes, {info['train']} train, {info['valid']} valid images")
    return 0
