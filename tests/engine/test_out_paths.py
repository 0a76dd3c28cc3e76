"""``--out`` that cannot be a run directory: one line, exit 2, and the user's file untouched."""

from __future__ import annotations

import json
from pathlib import Path

from tests.engine.conftest import TINY


def _one_line(r, *needles: str) -> None:
    assert r.code == 2, (r.code, r.out, r.err)
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    for needle in needles:
        assert needle in r.err, (needle, r.err)


def test_out_naming_an_existing_file(cli, tmp_path: Path) -> None:
    """The issue's reproduction: NotADirectoryError traceback."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    _one_line(cli("train", *TINY, "--out", notes), "is a file, not a folder", "notes.txt")
    assert notes.read_text() == "mine\n"


def test_out_below_a_file(cli, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    _one_line(cli("train", *TINY, "--out", notes / "run"), "cannot create run directory", "choose another --out")
    assert notes.read_text() == "mine\n"


def test_valid_json_does_not_replace_a_file_without_force(cli, tiny_run: Path, tmp_path: Path) -> None:
    """The issue's reproduction: ``valid -c RUN --json EXISTING`` overwrote the user's file."""
    mine = tmp_path / "results.json"
    mine.write_text('{"mine": true}\n')
    _one_line(cli("valid", "-c", tiny_run, "--data", "digits", "--json", mine, "--no-progress", "--workers", "0"), "exists", "--force")
    assert mine.read_text() == '{"mine": true}\n'
    _one_line(cli("valid", "-c", tiny_run, "--json", tmp_path), "is a folder")
    r = cli("valid", "-c", tiny_run, "--data", "digits", "--json", mine, "--force", "--no-progress", "--workers", "0")
    assert r.code == 0, r.err
    assert "top1" in json.loads(mine.read_text())
