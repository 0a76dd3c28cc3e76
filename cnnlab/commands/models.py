"""``cnnlab models [PATTERN]``: list registered architectures."""

from __future__ import annotations

import argparse

NAME = "models"
HELP = "list registered models (optionally filtered by a glob such as 'resnet*')"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", help="shell-style glob, e.g. 'resnet*'")


def run(args: argparse.Namespace) -> int:
    from cnnlab.models import list_models

    for name in list_models(args.pattern):
        print(name)
    return 0
