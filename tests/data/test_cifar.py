"""CIFAR python batches: round trip in the real dict layout, and refusal of foreign globals."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data.datasets import open_split
from cnnlab.data.sources.cifar import load_batch, open_cifar
from cnnlab.errors import CnnlabError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _dump(obj: object, path: Path, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _cifar10(root: Path, per_batch: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Fake CIFAR-10 with bytes keys (as Python 2 wrote them) and protocol 2; returns what was written."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}
        _dump(batch, folder / name)
        written[name] = (data, labels)
    _dump({b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR10_NAMES],
           b"num_vis": 3072}, folder / "batches.meta")
    return written


def test_cifar10_round_trip_from_parent_or_folder(tmp_path: Path) -> None:
    written = _cifar10(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        train, val = open_split(str(root), "train"), open_split(str(root), "val")
        assert train.classes == CIFAR10_NAMES and len(train) == 20 and len(val) == 4
        data2, labels2 = written["data_batch_2"]
        assert train.labels()[4:8] == labels2
        img = train.load(5)  # second image of data_batch_2
        assert img.shape == (3, 32, 32) and img.dtype == torch.uint8
        assert torch.equal(img, torch.from_numpy(data2[1].reshape(3, 32, 32)))
        assert img[0].flatten().tolist() == data2[1][:1024].tolist()  # first 1024 bytes are red
        test_data, test_labels = written["test_batch"]
        assert val.labels() == test_labels and torch.equal(val.load(0), torch.from_numpy(test_data[0].reshape(3, 32, 32)))
        assert val.describe(2) == "cifar-10-batches-py:val[2]"


def test_cifar100_fine_and_coarse_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 6), ("test", 3)):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "fine_labels": list(range(n)), "coarse_labels": [i % 2 for i in range(n)]}
        _dump(batch, folder / name, protocol=5)  # str keys, numpy's protocol-5 path
    _dump({"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]},
          folder / "meta", protocol=5)
    train = open_split(str(tmp_path), "train")
    assert len(train.classes) == 100 and train.labels() == list(range(6))
    coarse = open_cifar(tmp_path, "val", label="coarse")
    assert coarse.classes[:2] == ["coarse0", "coarse1"] and coarse.labels() == [0, 1, 0]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a malicious batch does: call a global at load time
        return (os.system, (f"touch {self.marker}",))


def test_forbidden_global_is_refused_without_running(tmp_path: Path) -> None:
    _cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = tmp_path / "cifar-10-batches-py" / "test_batch"
    _dump({b"data": _Exploit(marker), b"labels": []}, evil)
    assert b"system" in evil.read_bytes()
    with pytest.raises(CnnlabError, match=r"refusing to load global (posix|os|nt)\.system"):
        open_split(str(tmp_path), "val")
    assert not marker.exists()
    _dump({"x": pickle.loads}, evil)
    with pytest.raises(CnnlabError, match="refusing to load global"):
        load_batch(evil)


def test_malformed_batch_is_named(tmp_path: Path) -> None:
    _cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    _dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, batch)
    with pytest.raises(CnnlabError, match="data_batch_3: 'data' is not a uint8 N x 3072"):
        open_split(str(tmp_path), "train")
    batch.write_bytes(b"garbage")
    with pytest.raises(CnnlabError, match="data_batch_3"):
        open_split(str(tmp_path), "train")
    _dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, batch)
    with pytest.raises(CnnlabError, match="labels outside 0..9"):
        open_split(str(tmp_path), "train")


def test_batch_written_by_old_numpy_loads(tmp_path: Path) -> None:
    """The official files name ``numpy.core.multiarray``; numpy 2 writes ``numpy._core``: accept both."""
    data = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": data, b"labels": [3, 4]}, protocol=2)
    assert b"numpy._core.multiarray\n_reconstruct" in raw
    path = tmp_path / "old_batch"
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    batch = load_batch(path)
    assert np.array_equal(batch["data"], data) and batch["labels"] == [3, 4]
