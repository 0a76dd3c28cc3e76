"""Class folders: exact-name labels, recursive sorted listing, hidden files, val checks, hold-out."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.datasets import open_split
from cnnlab.data.sources.base import BadImage
from cnnlab.data.sources.folders import VAL_FRACTION, open_class_folders
from cnnlab.errors import CnnlabError


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (3, 2), value).save(path, format="PNG")


def _tree(root: Path, layout: dict[str, int]) -> None:
    """Each class gets ``n`` PNGs whose pixel value is the class's position in ``layout``."""
    for value, (cls, n) in enumerate(layout.items()):
        for i in range(n):
            _png(root / cls / f"{i:03d}.png", value)


def test_substring_class_names_get_exact_labels(tmp_path: Path) -> None:
    layout = {"cat": 2, "wildcat": 2, "n01": 2, "n011": 2, "n0": 1}
    _tree(tmp_path / "train", layout)
    _tree(tmp_path / "val", layout)
    for split in ("train", "val"):
        src = open_split(str(tmp_path), split)
        assert src.classes == sorted(layout)  # ['cat', 'n0', 'n01', 'n011', 'wildcat']
        assert len(src) == sum(layout.values())
        for i in range(len(src)):
            folder = Path(src.describe(i)).parent.name
            assert src.classes[src.label(i)] == folder
            pixel = int(src.load(i)[0, 0, 0])
            assert list(layout)[pixel] == folder  # the image really came from that class


def test_listing_is_recursive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    root = tmp_path / "train"
    _png(root / "b" / "z.png", 1)
    _png(root / "b" / "sub" / "deeper" / "a.png", 1)
    _png(root / "b" / "a.png", 1)
    _png(root / "b" / ".hidden.png", 1)
    _png(root / "b" / ".thumbs" / "x.png", 1)
    _png(root / "a" / "one.png", 0)
    _png(root / ".git" / "ignored.png", 0)  # hidden folder is not a class
    (root / "a" / "readme.txt").write_text("not an image")  # any extension listed, bad at load
    _png(tmp_path / "val" / "a" / "v.png", 0)
    src = open_split(str(tmp_path), "train")
    assert src.classes == ["a", "b"]
    rel = [os.path.relpath(src.describe(i), root) for i in range(len(src))]
    assert rel == ["a/one.png", "a/readme.txt", "b/a.png", "b/sub/deeper/a.png", "b/z.png"]
    with pytest.raises(BadImage, match="not an image"):
        src.load(rel.index("a/readme.txt"))
    assert src.load(rel.index("b/z.png")).shape == (1, 2, 3)


def test_val_class_not_in_train_is_named(tmp_path: Path) -> None:
    _tree(tmp_path / "train", {"cat": 1, "dog": 1})
    _tree(tmp_path / "val", {"cat": 1, "dgo": 1})
    assert len(open_split(str(tmp_path), "train")) == 2
    with pytest.raises(CnnlabError, match="'dgo'"):
        open_split(str(tmp_path), "val")


def test_val_may_lack_a_class_and_keeps_train_indices(tmp_path: Path) -> None:
    _tree(tmp_path / "train", {"a": 1, "b": 1, "c": 1})
    _tree(tmp_path / "val", {"c": 2})
    val = open_split(str(tmp_path), "val")
    assert val.classes == ["a", "b", "c"] and val.labels() == [2, 2]


def test_flat_layout_holds_out_a_stable_stratified_val(tmp_path: Path) -> None:
    layout = {"x": 30, "y": 20, "z": 1}
    for cls, n in layout.items():  # content does not matter for splitting: nothing is decoded
        (tmp_path / cls).mkdir()
        for i in range(n):
            (tmp_path / cls / f"{i}.jpg").write_bytes(b"")
    train, val = open_split(str(tmp_path), "train"), open_split(str(tmp_path), "val")
    assert np.bincount(val.labels(), minlength=3).tolist() == [3, 2, 0]  # 10%, singleton stays in train
    assert np.bincount(train.labels(), minlength=3).tolist() == [27, 18, 1]
    assert not set(train.paths) & set(val.paths)
    assert open_split(str(tmp_path), "val").paths == val.paths  # same call, same split
    other = [open_class_folders(tmp_path, "val", seed=s).paths for s in (1, 2, 3)]
    assert any(p != val.paths for p in other)  # the seed really chooses
    (tmp_path / "x" / "new.jpg").write_bytes(b"")
    grown_val = open_split(str(tmp_path), "val").paths
    assert len(set(grown_val) & set(val.paths)) >= len(val.paths) - 1  # old files keep their split
    assert VAL_FRACTION == 0.1


def test_train_only_layout_holds_out_val_from_train(tmp_path: Path) -> None:
    _tree(tmp_path / "train", {"a": 10, "b": 10})
    train, val = open_split(str(tmp_path), "train"), open_split(str(tmp_path), "val")
    assert (len(train), len(val)) == (18, 2) and not set(train.paths) & set(val.paths)


def test_folder_source_pickles(tmp_path: Path) -> None:
    _tree(tmp_path, {"a": 3, "b": 3})
    src = open_split(str(tmp_path), "train")
    clone = pickle.loads(pickle.dumps(src))
    assert clone.labels() == src.labels() and torch.equal(clone.load(0), src.load(0))


def test_val_without_train_is_an_error(tmp_path: Path) -> None:
    _tree(tmp_path / "val", {"a": 1})
    with pytest.raises(CnnlabError, match="no train/ folder"):
        open_split(str(tmp_path), "val")
