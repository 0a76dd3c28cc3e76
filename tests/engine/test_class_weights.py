"""``--class-weights auto|FILE`` and ``--balance``: the weights a file gives, and one clear line for
each way a weights file or a balance value can be wrong (never a traceback)."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import CnnlabError
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
