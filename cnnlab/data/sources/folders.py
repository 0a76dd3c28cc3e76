"""Class-folder datasets: ``root/train/<class>/...`` + ``root/val/<class>/...``, or ``root/<class>/...``.

* Classes are the sorted names of the train class folders, compared as exact folder names (never
  substrings of a path: ``cat`` and ``wildcat`` are different classes, and so are ``n01`` and
  ``n011``). A val class folder that is not a train class is an error naming it.
* Files are listed recursively under each class folder and sorted, so order is deterministic.
  Hidden files and folders (names starting with ``.``) are skipped. Any extension is accepted:
  decoding is by content, and a file that is not an image is a :class:`BadImage` at load time,
  counted and skipped by the loader.
* Without a ``val`` folder (``root/<class>/...``, or ``root/train`` alone), "val" is a stratified
  hold-out of ``VAL_FRACTION = 10%`` of each class (at least one image from any class with two or
  more), chosen by a keyed hash of ``(seed, relative path)``. A file keeps its split when others
  are added; "train" is the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cnnlab.data.images import decode_image
from cnnlab.data.sources.base import ImageSource
from cnnlab.data.sources.holdout import stratified_holdout
from cnnlab.errors import CnnlabError

VAL_FRACTION = 0.1
SPLITS = ("train", "val")


class FolderSource(ImageSource):
    """Files on disk; ``paths`` are relative to ``root``. Only strings, so it pickles cheaply."""

    def __init__(self, root: str | Path, paths: list[str], labels: list[int], classes: list[str]) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.root = str(root)
        self.paths = paths
        self._labels = labels
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.paths)

    def label(self, index: int) -> int:
        return self._labels[index]

    def labels(self) -> list[int]:
        return list(self._labels)

    def load(self, index: int) -> torch.Tensor:
        return decode_image(os.path.join(self.root, self.paths[index]))

    def describe(self, index: int) -> str:
        return os.path.join(self.root, self.paths[index])


def _visible(name: str) -> bool:
    return not name.startswith(".")


def class_folders(directory: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``directory``."""
    try:
        entries = list(os.scandir(directory))
    except OSError as e:
        raise CnnlabError(f"cannot list {directory}: {e.strerror}; check the path and its permissions") from None
    return sorted(e.name for e in entries if _visible(e.name) and e.is_dir())


def _files_under(directory: Path, relative_to: Path) -> list[str]:
    """Every visible file below ``directory`` (recursively), as sorted paths relative to ``relative_to``."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = [d for d in dirnames if _visible(d)]  # prune hidden folders in place
        rel_dir = os.path.relpath(dirpath, relative_to)
        found.extend(os.path.join(rel_dir, f) for f in filenames if _visible(f))
    return sorted(found)


def _listing(directory: Path, classes: list[str], allowed: list[str] | None = None) -> tuple[list[str], list[int]]:
    """Files and exact-name labels of the class folders in ``directory``; labels index ``allowed``."""
    allowed = classes if allowed is None else allowed
    index = {name: i for i, name in enumerate(allowed)}
    paths: list[str] = []
    labels: list[int] = []
    for name in classes:
        files = _files_under(directory / name, directory)
        paths.extend(files)
        labels.extend([index[name]] * len(files))
    return paths, labels


def is_class_folder_root(root: Path) -> bool:
    """A folder with class sub-folders (possibly under ``train``)."""
    return bool(class_folders(root / "train")) if (root / "train").is_dir() else bool(class_folders(root))


def open_class_folders(root: Path, split: str, seed: int = 0) -> FolderSource:
    """One split of a class-folder dataset (see the module docstring for the layouts)."""
    if split not in SPLITS:
        raise CnnlabError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    root = Path(root)
    train_dir = root / "train" if (root / "train").is_dir() else root
    val_dir = root / "val"
    if train_dir == root and val_dir.is_dir():
        raise CnnlabError(f"{root} has a val/ folder but no train/ folder: add {root / 'train'} with one sub-folder per class")
    classes = class_folders(train_dir)
    if not classes:
        raise CnnlabError(
            f"no class folders in {train_dir}: expected {root}/<class>/<images> or {root}/train/<class>/ and {root}/val/<class>/"
        )
    if split == "val" and train_dir != root and val_dir.is_dir():
        val_classes = class_folders(val_dir)
        unknown = [c for c in val_classes if c not in set(classes)]
        if unknown:
            raise CnnlabError(
                f"val class folder {unknown[0]!r} in {val_dir} is not a class in {train_dir}: "
                f"rename or remove it (classes come from the train folders)"
            )
        paths, labels = _listing(val_dir, val_classes, allowed=classes)
        if not paths:
            raise CnnlabError(f"no files in the class folders of {val_dir}: add validation images or remove {val_dir}")
        return FolderSource(val_dir, paths, labels, classes)

    paths, labels = _listing(train_dir, classes)
    if not paths:
        raise CnnlabError(f"no files in the class folders of {train_dir}: put images in {train_dir}/<class>/")
    if train_dir != root and val_dir.is_dir():
        return FolderSource(train_dir, paths, labels, classes)  # split == "train", val given separately
    train_idx, val_idx = stratified_holdout(labels, paths, VAL_FRACTION, seed)
    chosen = (train_idx if split == "train" else val_idx).tolist()
    return FolderSource(train_dir, [paths[i] for i in chosen], [labels[i] for i in chosen], classes)
