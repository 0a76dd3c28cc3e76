"""Darknet files a hostile (or just unlucky) user hands cnnlab: each ends in darknet's behaviour or one
clear line, never a traceback, and never loses a file. Listed in docs/reliability.md ("Darknet files")."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.darknet.textfiles import decode, read_lines

from .refdata import REF

ORACLE_CFG = REF / "cfg" / "oracle-mini-pj.cfg"  # 40 classes, 80x64 input; its top-1 for img1 is class_036


def _run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _one_line_error(code: int, err: str) -> None:
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# -- text files that are not UTF-8 ---------------------------------------------------------------


def test_decode_keeps_utf8_and_reads_other_lines_as_darknet_does() -> None:
    data = "# déjà\n".encode() + b"# r\xe9seau \x85 fin\r\nclasses=2\n"  # a UTF-8 line, a cp1252 line with "…"
    assert decode(data).split("\n") == ["# déjà", "# r\xe9seau \x85 fin\r", "classes=2", ""]
    assert decode(b"\xef\xbb\xbf[net]\n") == "[net]\n"  # a byte-order mark is not part of [net]
    # image lists keep the bytes of a name that is not UTF-8, so the file opens
    assert os.fsencode(decode(b"val/\xe9t\xe9.png\n", paths=True).strip()) == b"val/\xe9t\xe9.png"


def test_non_utf8_cfg_data_names_and_list_work_as_in_darknet(weights_for, tmp_path: Path, capsys) -> None:
    """A Latin-1 comment in the cfg and .data, a Latin-1 class name, and an image list naming a folder and a
    file whose names are Latin-1 bytes: darknet reads them all, so does cnnlab (it raised UnicodeDecodeError)."""
    cfg = tmp_path / "net.cfg"
    cfg.write_bytes(b"# r\xe9seau de d\xe9monstration \x85\n" + ORACLE_CFG.read_bytes())
    names = [f"class_{i:03d}".encode() for i in range(40)]
    names[36] = b"caf\xe9"  # Latin-1
    (tmp_path / "x.names").write_bytes(b"\n".join(names) + b"\n")
    folder = tmp_path / os.fsdecode(b"caf\xe9")  # the label's folder, in the same legacy encoding
    folder.mkdir()
    image = folder / os.fsdecode(b"\xe9t\xe9.png")
    image.write_bytes((REF / "images" / "img1_500x375.png").read_bytes())
    (tmp_path / "valid.list").write_bytes(os.fsencode(image) + b"\n")
    data = tmp_path / "x.data"
    data.write_bytes(b"# donn\xe9es de test\nclasses=40\nnames=" + os.fsencode(tmp_path / "x.names")
                     + b"\nvalid=" + os.fsencode(tmp_path / "valid.list") + b"\ntop=5\n")  # fmt: skip
    weights = weights_for("oracle-mini-pj")

    code, out, err = _run(capsys, "summary", f"darknet:{cfg}")
    assert code == 0 and "Traceback" not in err
    code, out, err = _run(capsys, "darknet", "classifier", "predict", data, cfg, weights, image, "-t", "1")
    assert code == 0, err
    assert out.endswith(": café\n")  # the Latin-1 name, printed as the text it is
    code, out, err = _run(capsys, "darknet", "classifier", "valid", data, cfg, weights)
    assert code == 0, err
    assert out.splitlines() == ["0: top 1: 1.000000, top 5: 1.000000"]  # the folder matched the Latin-1 label
    assert read_lines(tmp_path / "x.names")[36] == "café"
