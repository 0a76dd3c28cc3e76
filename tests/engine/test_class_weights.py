"""``--class-weights auto|FILE`` and ``--balance``: the weights a file gives, one clear line for each way
a weights file or a balance value can be wrong (never a traceback), and what ``--balance sampler``
does to a class cut to 5 % of its images (bench/imbalance.py measures what that does to its recall)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from cnnlab import config
from cnnlab.data.datasets import open_split
from cnnlab.data.sources.subset import SubsetSource
from cnnlab.engine.build import Data, load_data
from cnnlab.engine.distributed import Dist
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.tasks.classification import class_weights_from

from tests.engine.conftest import TINY

CLASSES = ["cat", "dog", "golden retriever"]


def weights_file(tmp_path, text: str) -> str:
    path = tmp_path / "weights.txt"
    path.write_text(text)
    return str(path)


def test_auto_is_inverse_frequency_with_mean_one():
    w = class_weights_from("auto", [0] * 6 + [1] * 3 + [2] * 3, CLASSES)
    assert torch.allclose(w, torch.tensor([2 / 3, 4 / 3, 4 / 3]))


def test_file_one_weight_per_line_in_class_order(tmp_path):
    w = class_weights_from(weights_file(tmp_path, "# comment\n1\n2.5\n\n0.5\n"), [], CLASSES)
    assert w.tolist() == [1.0, 2.5, 0.5]


def test_file_name_weight_lines_in_any_order_and_names_with_spaces(tmp_path):
    w = class_weights_from(weights_file(tmp_path, "golden retriever 3\ncat 1\ndog 2\n"), [], CLASSES)
    assert w.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("1\n2\n", "has 2 weights but the data has 3 classes"),
        ("1\nmany\n3\n", "weights must be numbers"),
        ("1\ndog 2\n3\n", "weights must be numbers"),  # bare weights and named ones mixed
        ("cat 1\ndog x\ngolden retriever 3\n", "weights must be numbers"),
        ("cat 1\ndog 2\n", "no weight for class 'golden retriever'"),
        ("cat 1\ndog 2\ndgo 2\ngolden retriever 3\n", "'dgo' is not a class"),
        ("cat 1\ncat 2\ndog 2\ngolden retriever 3\n", "class 'cat' has two weights"),
        ("1\n-1\n1\n", "must not be negative"),
        ("0\n0\n0\n", "at least one must be positive"),
        ("", "has 0 weights"),
    ],
)
def test_bad_weights_file_is_one_line_naming_the_problem(tmp_path, text, message):
    path = weights_file(tmp_path, text)
    with pytest.raises(CnnlabError, match=message) as e:
        class_weights_from(path, [], CLASSES)
    assert "\n" not in str(e.value) and path in str(e.value)


def test_missing_weights_file(tmp_path):
    with pytest.raises(CnnlabError, match="no such file; give 'auto' or a file"):
        class_weights_from(str(tmp_path / "nope.txt"), [], CLASSES)


def test_cli_bad_weights_file_and_bad_balance_are_one_line(cli, tmp_path):
    r = cli("train", *TINY, "--class-weights", weights_file(tmp_path, "1\n2\n"), "--out", tmp_path / "run")
    assert r.code == 2 and r.err.count("\n") == 1 and "has 2 weights but the data has 10 classes" in r.err
    r = cli("train", *TINY, "--balance", "sampling", "--out", tmp_path / "run2")
    assert r.code == 2 and r.err.strip() == "cnnlab train: error: config key 'balance' must be one of none, sampler, got 'sampling'"
    assert not (tmp_path / "run2").exists()


def _train_labels(balance: str) -> Counter:
    """Labels of one epoch of the training loader on digits with class 3 cut to 5 % of its images."""
    train, val = open_split("digits", "train"), open_split("digits", "val")
    labels = np.array(train.labels())
    threes = np.flatnonzero(labels == 3)
    keep = np.setdiff1d(np.arange(len(labels)), threes[round(0.05 * len(threes)) :])
    cfg = config.resolve(None, {"balance": balance, "batch_size": 32, "workers": 0, "crop": "center", "hflip": 0.0})
    pre = create_model("lenet5", num_classes=10).meta.preprocess
    loader, _ = load_data(cfg, Data(SubsetSource(train, keep), val), pre, Dist(), pin=False)
    loader.sampler.set_epoch(0)
    return Counter(int(label) for batch in loader for label in batch.labels)


def test_balance_sampler_draws_a_cut_class_as_often_as_the_others():
    natural, balanced = _train_labels("none"), _train_labels("sampler")
    n = sum(balanced.values())
    assert natural[3] / sum(natural.values()) < 0.01  # 7 of ~1300 images
    assert 0.07 < balanced[3] / n < 0.13 and all(0.07 < balanced[c] / n < 0.13 for c in range(10)), balanced
