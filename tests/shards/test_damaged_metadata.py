"""A damaged manifest, index or settings file is one line naming the file and the fix; a re-run repairs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.data.datasets import open_split
from cnnlab.data.shards import format as fmt
from cnnlab.errors import CnnlabError
from tests.shards.conftest import write_split

INDEX = fmt.index_file("train", 1)


def _copy(shards: Path, tmp_path: Path) -> Path:
    shutil.copytree(shards, tmp_path / "s")
    return tmp_path / "s"


@pytest.mark.parametrize(
    "name, damage",
    [
        (INDEX, lambda t: t[: len(t) // 2]),  # the reproduction: cut short
        (INDEX, lambda t: "\udcff".join([t[:5], t[5:]])),  # not UTF-8 once written
        (INDEX, lambda t: json.dumps({"samples": [["k", "zero", 1, 0, "jpg"]]})),  # wrong type in an entry
        (INDEX, lambda t: json.dumps({"samples": 7})),
        (INDEX, lambda t: json.dumps({"samples": []})),  # fewer samples than the manifest says
        (fmt.MANIFEST, lambda t: t[:-9]),
        (fmt.MANIFEST, lambda t: "[]"),
        (fmt.MANIFEST, lambda t: json.dumps({**json.loads(t), "shards": [{"file": "x.tar"}]})),
    ],
    ids=["index-cut", "index-not-utf8", "index-entry-type", "index-shape", "index-count", "manifest-cut", "manifest-list", "manifest-keys"],
)
def test_damaged_json_is_one_line(shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, damage) -> None:
    root = _copy(shards, tmp_path)
    path = root / "train" / name
    path.write_bytes(damage(path.read_text()).encode("utf-8", "surrogateescape"))
    with pytest.raises(CnnlabError, match=name.replace(".", r"\.")) as e:
        open_split(f"shards:{root}", "train")
    assert "\n" not in str(e.value)
    assert main(["train", "--data", f"shards:{root}", "--model", "lenet5", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and name in err and "Traceback" not in err


def test_rerun_rewrites_a_shard_whose_index_is_damaged(folders: Path, shards: Path, tmp_path: Path) -> None:
    root = _copy(shards, tmp_path)
    good = (root / "train" / fmt.shard_file("train", 1)).read_bytes()
    (root / "train" / INDEX).write_text('{"samples": [[')
    write_split(folders, root / "train", "train")  # same settings: resumes, rewrites shard 1 only
    assert (root / "train" / fmt.shard_file("train", 1)).read_bytes() == good
    assert len(open_split(f"shards:{root}", "train")) == 30


def test_damaged_settings_file_is_one_line(folders: Path, shards: Path, tmp_path: Path) -> None:
    root = _copy(shards, tmp_path)
    (root / "train" / fmt.SETTINGS).write_text("{")
    with pytest.raises(CnnlabError, match="settings.json is corrupt"):
        write_split(folders, root / "train", "train")
