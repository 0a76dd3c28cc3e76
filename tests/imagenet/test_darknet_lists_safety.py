"""``cnnlab data darknet``: names that cannot be a list line are skipped and counted; lists written
before are kept unless --force; each list is written whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnnlab.cli import main

A, B = "n01440764", "n01443537"


def _tree(root: Path) -> Path:
    for split, n in (("train", 3), ("val", 1)):
        for w in (A, B):
            (root / split / w).mkdir(parents=True)
            for i in range(n):
                (root / split / w / f"{w}_{i}.JPEG").write_bytes(b"\xff\xd8")  # contents are not read
    return root


def test_name_that_is_not_utf8_is_skipped_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's reproduction: such a name stopped the command midway with train.list empty."""
    root = _tree(tmp_path / "data")
    with open(os.path.join(os.fsencode(root / "train" / A), b"\xff\xfe_bad.JPEG"), "wb") as f:  # Latin-1 bytes
        f.write(b"\xff\xd8")
    (root / "train" / B / "two\nlines.JPEG").write_bytes(b"\xff\xd8")  # would be two list lines
    assert main(["data", "darknet", str(root)]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 image(s)" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    train = (root / "train.list").read_text().splitlines()
    assert len(train) == 6 and all(Path(p).is_file() for p in train)
    assert len((root / "valid.list").read_text().splitlines()) == 2


def test_lists_written_before_are_kept_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "data")
    assert main(["data", "darknet", str(root)]) == 0
    (root / "train.list").write_text("my edited list\n")
    capsys.readouterr()
    assert main(["data", "darknet", str(root)]) == 2
    err = capsys.readouterr().err
    assert "exists: pass --force" in err and len(err.strip().splitlines()) == 1
    assert (root / "train.list").read_text() == "my edited list\n"
    assert main(["data", "darknet", str(root), "--force"]) == 0
    assert len((root / "train.list").read_text().splitlines()) == 6
    assert not list(root.glob(".*.tmp"))


def test_a_failed_write_leaves_no_part_of_a_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Every list is complete or absent: a failure while writing (disk full) never leaves half of one."""
    root = _tree(tmp_path / "data")
    from cnnlab import fileio

    calls = []
    real_replace = os.replace

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    assert main(["data", "darknet", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: cannot write" in err and "No space left on device" in err, err
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["labels.txt", "names.list"]
    assert (root / "labels.txt").read_text() == f"{A}\n{B}\n"
