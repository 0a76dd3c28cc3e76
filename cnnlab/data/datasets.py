"""Open any dataset split by name or path: ``open_split("mnist5k", "val")``, ``open_split("~/pets", "train")``.

``spec`` is a built-in name (:data:`DATASETS`, listed by ``cnnlab datasets``; a built-in name
wins over a folder of the same name, so write ``./digits`` for the folder) or a folder whose
layout is detected, in this order:

1. CIFAR-10/100 python batches (``batches.meta``, or ``meta`` + ``train``; or their parent),
2. MNIST-style idx files (``train-images-idx3-ubyte[.gz]`` ...; also in ``raw/``, ``*/raw/``),
3. class folders (``root/train/<class>/``, ``root/val/<class>/``, or ``root/<class>/`` with a
   seeded 10% hold-out as "val").

``shards:DIR`` opens WebDataset shards written by ``cnnlab data shards`` (:mod:`cnnlab.data.shards`).

Splits are ``"train"`` and ``"val"``. ``seed`` only chooses the hold-out of class folders without
a val folder; built-ins have a fixed split (see :mod:`cnnlab.data.sources.builtin`) and idx/CIFAR
files carry their own test split. Opening decodes nothing: folders are listed, arrays are read.
"""

from __future__ import annotations

import os
from pathlib import Path

from cnnlab.data.detection_sets import is_voc_folder
from cnnlab.data.sources.base import ImageSource
from cnnlab.data.sources.builtin import DATASETS, BuiltinDataset
from cnnlab.data.sources.cifar import find_cifar_dir, open_cifar
from cnnlab.data.sources.folders import class_folders, open_class_folders
from cnnlab.data.sources.idx import find_idx_dir, open_idx
from cnnlab.errors import CnnlabError

SPLITS = ("train", "val")


def list_datasets(pattern: str | None = None) -> list[str]:
    """Names of the built-in datasets, sorted; ``pattern`` is a shell glob."""
    return DATASETS.names(pattern)


def get_dataset(name: str) -> BuiltinDataset:
    """A built-in's metadata (description, classes, split sizes, package); suggests close names."""
    return DATASETS.get(name)


def describe_dataset(name: str) -> str:
    """The one-line description of a built-in dataset."""
    return DATASETS.get(name).description


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.startswith(("~", ".")) or spec.endswith(os.sep)


def detect_layout(root: Path) -> str:
    """``"cifar"``, ``"idx"`` or ``"folders"`` for an existing folder; CnnlabError if none fits."""
    if find_cifar_dir(root) is not None:
        return "cifar"
    if find_idx_dir(root) is not None:
        return "idx"
    if is_voc_folder(root):  # before class folders: not classes called "Annotations" and "JPEGImages"
        raise CnnlabError(f"{root} is a PASCAL VOC folder (boxes, not classes): train a detector on it with --task detect")
    inner = root / "train" if (root / "train").is_dir() else root
    if class_folders(inner):
        return "folders"
    raise CnnlabError(
        f"{root} holds no dataset: expected class folders ({root}/<class>/<images> or "
        f"{root}/train/<class>/ + {root}/val/<class>/), MNIST idx files or CIFAR python batches"
    )


def open_split(spec: str, split: str, seed: int = 0) -> ImageSource:
    """The ``split`` ("train" or "val") of a built-in dataset or a dataset folder."""
    if split not in SPLITS:
        raise CnnlabError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if spec.startswith("shards:"):  # written by `cnnlab data shards`
        from cnnlab.data.shards.source import open_shards

        return open_shards(spec[len("shards:") :], split)
    if spec in DATASETS:
        return DATASETS.get(spec).open(split)
    root = Path(spec).expanduser()
    if not root.exists():
        if _looks_like_path(spec):
            raise CnnlabError(f"dataset path {spec} does not exist: check the path, or use a built-in ({', '.join(list_datasets())})")
        DATASETS.get(spec)  # raises "unknown dataset ... Did you mean ...?"
    if root.is_file() and root.suffix == ".data":  # darknet detection .data (train=, valid=, names=)
        from cnnlab.data.sources.darknet_data import open_darknet_data

        return open_darknet_data(root, split)
    if not root.is_dir():
        raise CnnlabError(f"dataset {spec} is a file, not a folder: give the folder that holds the dataset (or a darknet .data file)")
    layout = detect_layout(root)
    if layout == "cifar":
        return open_cifar(root, split)
    if layout == "idx":
        return open_idx(root, split)
    return open_class_folders(root, split, seed)


__all__ = ["DATASETS", "SPLITS", "open_split", "list_datasets", "get_dataset", "describe_dataset", "detect_layout"]
