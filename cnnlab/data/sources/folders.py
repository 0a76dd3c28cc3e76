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
* **Symlinks are followed, each real file counted once.** Symlinked files and class folders work
  (datasets are often assembled from links). Every folder is identified by its real path: a link
  back to a folder already listed, to another class folder, or to the dataset itself (``ln -s ..
  train/a/up``) is a loop and is not entered, and a real file reached by two paths is listed once
  (under the first path in sorted order). Otherwise one file would be both a training and a
  "held-out" sample, under several labels. A ``val/`` file that is also in ``train/`` is dropped
  from val. Each of these prints one warning line with the count.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
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


@dataclass
class _Walk:
    """One split's listing by real path: which folders were entered, where the links lead, what was left out.

    Real paths are kept per folder and per symlinked file only (a regular file's real path is its
    folder's plus its name), so listing ImageNet does not hold 1.3 million extra strings.
    """

    stop: set[str]  # real paths never entered below a class root: other class roots, the split and its ancestors
    dirs: dict[str, str] = field(default_factory=dict)  # real folder → its relative path
    link_files: dict[str, str] = field(default_factory=dict)  # relative path of a symlinked file → real path
    loops: list[str] = field(default_factory=list)  # folders not entered (relative paths)
    duplicates: list[str] = field(default_factory=list)  # files already listed under another path


def _ancestors_and_self(path: str) -> set[str]:
    out = {path}
    while (parent := os.path.dirname(path)) != path:
        out.add(parent)
        path = parent
    return out


def _files_under(directory: Path, relative_to: Path, walk: _Walk) -> list[str]:
    """Every visible file below ``directory`` (recursively, following symlinks) as paths relative to
    ``relative_to``; folders already entered (loops) are not entered again, and are noted in ``walk``."""
    found: list[str] = []
    top = os.path.realpath(directory)
    walk.dirs[top] = os.path.relpath(directory, relative_to)  # a folder is marked when queued, so it is queued once
    pending = [(str(directory), top)]
    while pending:
        path, real = pending.pop()
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue  # an unreadable sub-folder
        rel_dir = os.path.relpath(path, relative_to)  # once per folder: relpath per file costs seconds on ImageNet
        for e in entries:
            if not _visible(e.name):
                continue
            rel = os.path.join(rel_dir, e.name)
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                # Only a symlink needs resolving (scandir's d_type says which); else real = parent's + name.
                sub_real = os.path.realpath(e.path) if e.is_symlink() else os.path.join(real, e.name)
                if sub_real in walk.dirs or sub_real in walk.stop:
                    walk.loops.append(rel)
                else:
                    walk.dirs[sub_real] = rel
                    pending.append((e.path, sub_real))
                continue
            if e.is_symlink():  # a dangling link stays listed: it is a BadImage at load, counted
                walk.link_files[rel] = os.path.realpath(e.path)
            found.append(rel)
    return found


def _dedup_links(paths: list[str], labels: list[int], walk: _Walk) -> tuple[list[str], list[int]]:
    """Each real file once: a link to a file that is listed where it really is, or to a file another
    link (earlier in sorted order) already reached, is left out."""
    if not walk.link_files:
        return paths, labels
    keep_paths: list[str] = []
    keep_labels: list[int] = []
    targets: set[str] = set()
    for rel, label in zip(paths, labels):
        real = walk.link_files.get(rel)
        if real is not None:
            folder, name = os.path.split(real)
            if real in targets or (folder in walk.dirs and _visible(name)):
                walk.duplicates.append(rel)
                continue
            targets.add(real)
        keep_paths.append(rel)
        keep_labels.append(label)
    return keep_paths, keep_labels


def _listing(directory: Path, classes: list[str], allowed: list[str] | None = None) -> tuple[list[str], list[int], _Walk]:
    """Files and exact-name labels of the class folders in ``directory``; labels index ``allowed``."""
    allowed = classes if allowed is None else allowed
    index = {name: i for i, name in enumerate(allowed)}
    roots = {name: os.path.realpath(directory / name) for name in classes}
    around = _ancestors_and_self(os.path.realpath(directory))
    for name, real in roots.items():
        if real in around:
            raise CnnlabError(f"class folder {directory / name} is a link to {real}, which holds the dataset itself: remove the link")
    walk = _Walk(stop=around | set(roots.values()))
    paths: list[str] = []
    labels: list[int] = []
    for name in classes:
        walk.stop.discard(roots[name])  # the class being listed may be entered once, at its top
        files = _files_under(directory / name, directory, walk)
        walk.stop.add(roots[name])
        files.sort()
        paths.extend(files)
        labels.extend([index[name]] * len(files))
    paths, labels = _dedup_links(paths, labels, walk)
    return paths, labels, walk


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _report(directory: Path, walk: _Walk) -> None:
    """One line per kind of link trouble, so a user sees that something was left out, and why."""
    if walk.loops:
        _warn(f"{directory}: {len(walk.loops)} linked folder(s) lead back into the dataset and were not followed (e.g. {walk.loops[0]})")
    if walk.duplicates:
        _warn(f"{directory}: {len(walk.duplicates)} file(s) reached through a second path were counted once (e.g. {walk.duplicates[0]})")


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
        paths, labels, walk = _listing(val_dir, val_classes, allowed=classes)
        _report(val_dir, walk)
        paths, labels = _without_train_files(val_dir, paths, labels, walk, train_dir, classes)
        if not paths:
            raise CnnlabError(f"no files in the class folders of {val_dir}: add validation images or remove {val_dir}")
        return FolderSource(val_dir, paths, labels, classes)

    paths, labels, walk = _listing(train_dir, classes)
    _report(train_dir, walk)
    if not paths:
        raise CnnlabError(f"no files in the class folders of {train_dir}: put images in {train_dir}/<class>/")
    if train_dir != root and val_dir.is_dir():
        return FolderSource(train_dir, paths, labels, classes)  # split == "train", val given separately
    train_idx, val_idx = stratified_holdout(labels, paths, VAL_FRACTION, seed)
    chosen = (train_idx if split == "train" else val_idx).tolist()
    return FolderSource(train_dir, [paths[i] for i in chosen], [labels[i] for i in chosen], classes)


def _without_train_files(val_dir: Path, paths: list[str], labels: list[int], val_walk: _Walk,
                         train_dir: Path, classes: list[str]) -> tuple[list[str], list[int]]:  # fmt: skip
    """Drop val files that are (by real path) also training files: they would score as held-out."""
    _, _, train = _listing(train_dir, classes)
    train_targets = set(train.link_files.values())
    real_dir_of = {rel: real for real, rel in val_walk.dirs.items()}
    keep: list[int] = []
    for i, rel in enumerate(paths):
        folder, name = os.path.split(rel)
        real = val_walk.link_files.get(rel) or os.path.join(real_dir_of[folder], name)
        if real in train_targets or (os.path.dirname(real) in train.dirs and _visible(os.path.basename(real))):  # listed in train
            continue
        keep.append(i)
    if len(keep) < len(paths):
        kept = set(keep)
        first = next(p for i, p in enumerate(paths) if i not in kept)
        _warn(f"{val_dir}: {len(paths) - len(keep)} file(s) are also in {train_dir} and were left out of val (e.g. {first})")
    return [paths[i] for i in keep], [labels[i] for i in keep]
