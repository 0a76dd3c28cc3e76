"""``cnnlab datasets``: the built-in datasets that ship inside pip packages (no download)."""

from __future__ import annotations

import argparse

NAME = "datasets"
HELP = "list the built-in datasets (loadable offline) with their classes, splits and sources"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", help="shell-style glob, e.g. 'mnist*'")
    p.add_argument("--export", metavar="DIR", help="write the dataset PATTERN names as class folders of PNGs: DIR/<split>/<class>/")
    p.add_argument("--split", default="val", choices=("train", "val"), help="split to export (default: val)")
    p.add_argument("--per-class", type=int, default=0, metavar="K", help="export at most K images per class (default: all)")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="export at most N images in total (default: all)")


def _classes(names: tuple[str, ...]) -> str:
    shown = ",".join(names) if len(names) <= 4 else f"{','.join(names[:2])},...,{names[-1]}"
    return f"{len(names)} ({shown})"


def run(args: argparse.Namespace) -> int:
    from cnnlab.data.datasets import get_dataset, list_datasets

    if args.export:
        return _export(args)

    header = ("name", "classes", "train", "val", "image (CxHxW)", "package", "description")
    rows = [header]
    for name in list_datasets(args.pattern):
        d = get_dataset(name)
        rows.append((
            d.name, _classes(d.classes), str(d.train_size), str(d.val_size),
            "x".join(map(str, d.image_shape)), d.package, d.description,
        ))
    if len(rows) == 1:
        print(f"no built-in dataset matches {args.pattern!r}; `cnnlab datasets` lists them all")
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.rjust(w) if cell.isdecimal() else cell.ljust(w) for cell, w in zip(row, widths)]
        print("  ".join(cells + [row[-1]]).rstrip())
    print("Use a NAME, or a folder (class folders, MNIST idx files, CIFAR batches), wherever cnnlab asks for a dataset.")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnlab.data.datasets import open_split
    from cnnlab.data.export import export_class_folders
    from cnnlab.errors import CnnlabError

    if not args.pattern:
        raise CnnlabError("--export needs a dataset: cnnlab datasets NAME --export DIR")
    out = Path(args.export)
    n = export_class_folders(open_split(args.pattern, args.split), out, args.split, args.per_class, args.limit)
    print(f"wrote {n} image(s) of {args.pattern} {args.split} to {out / args.split}")
    return 0
