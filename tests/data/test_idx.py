"""MNIST idx files: round trip (plain and gzipped) and malformed files named in the error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data.datasets import open_split
from cnnlab.data.sources.idx import FASHION_NAMES, read_idx
from cnnlab.errors import CnnlabError


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def _write(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for kind, ndim, arr in (("images", 3, images), ("labels", 1, labels)):
        data = _idx_bytes(arr)
        name = f"{prefix}-{kind}-idx{ndim}-ubyte"
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


@pytest.fixture
def arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        "train": (rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), rng.integers(0, 10, 12).astype(np.uint8)),
        "t10k": (rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.arange(5, dtype=np.uint8)),
    }


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path: Path, arrays: dict, gz: bool) -> None:
    for prefix, (images, labels) in arrays.items():
        _write(tmp_path, prefix, images, labels, gz=gz)
    for split, prefix in (("train", "train"), ("val", "t10k")):
        src = open_split(str(tmp_path), split)
        images, labels = arrays[prefix]
        assert len(src) == len(images) and src.labels() == labels.tolist()
        assert src.classes == [str(d) for d in range(10)]
        assert torch.equal(src.load(3), torch.from_numpy(images[3])[None])  # (1, 28, 28)


def test_torchvision_raw_layout_and_fashion_names(tmp_path: Path, arrays: dict) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    _write(raw, "t10k", *arrays["t10k"], gz=True)
    src = open_split(str(tmp_path), "val")
    assert src.classes == FASHION_NAMES and len(src) == 5


def test_corrupted_header_is_named(tmp_path: Path, arrays: dict) -> None:
    images, labels = arrays["train"]
    _write(tmp_path, "train", images, labels)
    path = tmp_path / "train-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(CnnlabError, match="train-images-idx3-ubyte: not an idx file"):
        open_split(str(tmp_path), "train")
    path.write_bytes(good[:-100])  # truncated payload
    with pytest.raises(CnnlabError, match=r"12x28x28 = 9408 bytes but the file holds 9308"):
        open_split(str(tmp_path), "train")
    path.write_bytes(good[:2] + b"\x0b" + good[3:])  # 16-bit type code
    with pytest.raises(CnnlabError, match="0x0b is not supported"):
        read_idx(path, 3)
    with pytest.raises(CnnlabError, match="has 3 dimensions, expected 1"):
        path.write_bytes(good)
        read_idx(path, 1)  # an images file where a labels file belongs


def test_label_count_mismatch(tmp_path: Path, arrays: dict) -> None:
    images, labels = arrays["train"]
    _write(tmp_path, "train", images, labels[:-1])
    with pytest.raises(CnnlabError, match="11 labels for 12 images"):
        open_split(str(tmp_path), "train")


def test_missing_split_file(tmp_path: Path, arrays: dict) -> None:
    _write(tmp_path, "train", *arrays["train"])
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(CnnlabError, match="no train-labels-idx1-ubyte"):
        open_split(str(tmp_path), "train")
    with pytest.raises(CnnlabError, match="no t10k-images-idx3-ubyte"):
        open_split(str(tmp_path), "val")
