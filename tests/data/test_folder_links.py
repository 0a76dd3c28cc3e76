"""Symlinks in class folders: followed, each real file once, loops not entered, no file in train and val."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from cnnlab.data.datasets import open_split
from cnnlab.errors import CnnlabError


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (3, 2), value).save(path, format="PNG")


def _classes(root: Path, n: int) -> None:
    """Class a: pixel 0, class b: pixel 1; n files each."""
    for value, cls in enumerate("ab"):
        for i in range(n):
            _png(root / cls / f"{i:03d}.png", value)


def _real(src) -> list[str]:
    return [os.path.realpath(src.describe(i)) for i in range(len(src))]


def _check_labels(src) -> None:
    """Every sample's label is the class its pixels were written for."""
    for i in range(len(src)):
        assert src.classes[src.label(i)] == "ab"[int(src.load(i)[0, 0, 0])], src.describe(i)


def test_link_to_the_parent_is_a_loop_not_more_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's reproduction: ``ln -s .. train/a/up`` made 40 files 1,641 samples, val inside train."""
    _classes(tmp_path / "train", 20)
    os.symlink("..", tmp_path / "train" / "a" / "up")
    os.symlink("../..", tmp_path / "train" / "b" / "root")  # the dataset root: would pull in everything
    train, val = open_split(str(tmp_path), "train"), open_split(str(tmp_path), "val")
    assert len(train) + len(val) == 40
    assert not set(_real(train)) & set(_real(val))
    assert len(set(_real(train))) == len(train)
    _check_labels(train), _check_labels(val)
    assert "were not followed (e.g. a/up)" in capsys.readouterr().err


def test_symlinked_class_folders_and_files_keep_working(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _classes(store, 5)
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(store / "a", data / "a")  # a linked class folder
    (data / "b").mkdir()
    for f in sorted((store / "b").iterdir()):
        os.symlink(f, data / "b" / f.name)  # linked files (cp -s)
    train, val = open_split(str(data), "train"), open_split(str(data), "val")
    assert (len(train), len(val)) == (8, 2)
    assert sorted(_real(train) + _real(val)) == sorted(str(p) for p in store.rglob("*.png"))
    _check_labels(train), _check_labels(val)


def test_a_file_reached_twice_counts_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _classes(tmp_path, 10)
    os.symlink(tmp_path / "b" / "000.png", tmp_path / "a" / "zz-link-to-b.png")  # a b image linked into a
    os.symlink(tmp_path / "a" / "001.png", tmp_path / "a" / "zz-again.png")  # a second name in the same class
    os.symlink(tmp_path / "b", tmp_path / "a" / "sub")  # a link to another class folder
    train, val = open_split(str(tmp_path), "train"), open_split(str(tmp_path), "val")
    reals = _real(train) + _real(val)
    assert len(reals) == len(set(reals)) == 20
    _check_labels(train), _check_labels(val)  # the b image keeps label b
    err = capsys.readouterr().err
    assert "2 file(s) reached through a second path were counted once" in err
    assert "not followed (e.g. a/sub)" in err


def test_val_files_linked_from_train_are_not_held_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _classes(tmp_path / "train", 3)
    _png(tmp_path / "val" / "a" / "own.png", 0)
    os.symlink(tmp_path / "train" / "a" / "000.png", tmp_path / "val" / "a" / "copy.png")
    os.symlink(tmp_path / "train" / "b", tmp_path / "val" / "b")
    val = open_split(str(tmp_path), "val")
    assert [os.path.basename(p) for p in val.paths] == ["own.png"]
    assert "4 file(s) are also in" in capsys.readouterr().err  # copy.png and the 3 files of the linked b
    assert len(open_split(str(tmp_path), "train")) == 6


def test_class_folder_linking_to_the_dataset_is_an_error(tmp_path: Path) -> None:
    _classes(tmp_path / "train", 2)
    os.symlink("..", tmp_path / "train" / "c")
    with pytest.raises(CnnlabError, match="holds the dataset itself"):
        open_split(str(tmp_path), "train")
