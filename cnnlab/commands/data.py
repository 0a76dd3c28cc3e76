"""``cnnlab data SUBCOMMAND``: turn downloaded datasets into trainable folders.

Each sub-command is a module ``cnnlab.commands.data_<name>`` with the same protocol as a top-level
command (NAME, HELP, add_arguments, run). To add one, write that module and append its name below.
"""

from __future__ import annotations

import argparse
import importlib

NAME = "data"
HELP = "prepare datasets: ImageNet URL lists, ILSVRC archives, bounding boxes, darknet lists, shards"

# Sub-command module suffixes, in the order `cnnlab data --help` lists them.
SUBCOMMANDS: list[str] = ["urls", "ilsvrc", "bbox", "darknet", "shards", "shapes"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"cnnlab.commands.data_{name}")
        sp = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(_data_run=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args._data_run(args) or 0)
