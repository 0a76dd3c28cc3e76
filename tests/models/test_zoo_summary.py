"""The darknet-style summary: AlexNet's table exactly as the issue prints it, ResNet-50's
multiply-adds, and the `cnnlab summary` command."""

from __future__ import annotations

import pytest

from cnnlab.cli import main
from cnnlab.commands.summary import parse_input_size
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.models.summary import summarize

# Verbatim from the issue ("Its `cnnlab summary` must read like this table").
ALEXNET_TABLE = """\
layer     filters    size              input                output
   0 conv     96 11 x11 / 4 / 0   227 x 227 x   3  ->    55 x  55 x  96
   1 max          3 x 3 / 2 / 0    55 x  55 x  96  ->    27 x  27 x  96
   2 conv    256  5 x 5 / 1 / 2    27 x  27 x  96  ->    27 x  27 x 256
   3 max          3 x 3 / 2 / 0    27 x  27 x 256  ->    13 x  13 x 256
   4 conv    384  3 x 3 / 1 / 1    13 x  13 x 256  ->    13 x  13 x 384
   5 conv    384  3 x 3 / 1 / 1    13 x  13 x 384  ->    13 x  13 x 384
   6 conv    256  3 x 3 / 1 / 1    13 x  13 x 384  ->    13 x  13 x 256
   7 max          3 x 3 / 2 / 0    13 x  13 x 256  ->     6 x   6 x 256
   8 connected                              9216  ->  4096
   9 dropout       p = 0.50                 4096  ->  4096
  10 connected                              4096  ->  4096
  11 dropout       p = 0.50                 4096  ->  4096
  12 connected                              4096  ->  1000
  13 softmax                                          1000"""


def test_cnnlab_summary_alexnet_reproduces_the_issue_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "alexnet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[1 : 1 + len(ALEXNET_TABLE.splitlines())]
    for got, want in zip(table, ALEXNET_TABLE.splitlines(), strict=True):
        assert got.startswith(want), f"\n got: {got!r}\nwant: {want!r}"
        rest = got[len(want) :]
        # conv and connected rows add their BFLOPs; nothing else is appended to the other rows.
        if " conv " in want or "connected" in want:
            assert rest.strip().split()[1] == "BF" and float(rest.split()[0]) > 0
        else:
            assert rest == ""
    assert lines[-1].startswith("parameters 60,965,224")


def test_alexnet_bflops_are_twice_the_multiply_adds() -> None:
    s = summarize(create_model("alexnet"), (3, 227, 227))
    conv1 = s.rows[0]
    assert conv1.macs == 55 * 55 * 96 * (11 * 11 * 3)  # output pixels × kernel volume
    conv2 = s.rows[2]
    assert conv2.macs == 27 * 27 * 256 * (5 * 5 * 48)  # groups=2: each filter sees 48 maps
    assert s.bflops == pytest.approx(2 * s.macs / 1e9)


def test_resnet50_is_about_4_1_giga_multiply_adds() -> None:
    s = summarize(create_model("resnet50"), (3, 224, 224))
    assert s.macs / 1e9 == pytest.approx(4.1, abs=0.05)  # the paper's Table 1: 3.8 × 10⁹ FLOPs (v1)
    assert s.params == 25_557_032


def test_summary_honours_input_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "resnet20", "--input", "1x40x40"]) == 0
    out = capsys.readouterr().out
    assert "   0 conv     16  3 x 3 / 1 / 1    40 x  40 x   1  ->    40 x  40 x  16" in out


@pytest.mark.parametrize("text", ["3x224", "3x0x224", "axbxc", ""])
def test_bad_input_size_is_a_user_error(text: str) -> None:
    with pytest.raises(CnnlabError, match="C×H×W"):
        parse_input_size(text)


def test_summary_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "alexnett"]) == 2
    assert "Did you mean alexnet" in capsys.readouterr().err
    assert main(["summary", "alexnet", "--input", "3x100x100"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "3x227x227" in err
