"""Darknet files a hostile (or just unlucky) user hands cnnlab: each ends in darknet's behaviour or one
clear line, never a traceback, and never loses a file. Listed in docs/reliability.md ("Darknet files")."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

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


# -- images darknet's commands cannot decode ---------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bad_images(tmp_path: Path) -> dict[str, Path]:
    good = (REF / "images" / "img1_500x375.png").read_bytes()
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", 70000, 70000, 8, 2, 0, 0, 0)  # 4.9 Gpx claimed in 8 bytes
    files = {
        "bomb.png": sig + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""),
        "bad_crc.png": good[:29] + bytes([good[29] ^ 0xFF]) + good[30:],  # IHDR checksum: PIL raises SyntaxError
        "truncated.png": good[: len(good) // 2],
        "text.png": b"not an image\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


@pytest.mark.parametrize("bad", ["bomb.png", "over_limit.png", "bad_crc.png", "truncated.png", "text.png"])
def test_undecodable_images_are_one_line_errors_in_predict_and_detector_test(bad: str, weights_for, tmp_path: Path, capsys, monkeypatch) -> None:
    """The decompression-bomb guard (it was a DecompressionBombError traceback; an image between PIL's limit
    and twice it was decoded after a warning) and other decoder errors, through cnnlab's one image path."""
    if bad == "over_limit.png":  # 187,500 px: over the limit, under PIL's 2x hard error
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
        image = tmp_path / bad
        image.write_bytes((REF / "images" / "img1_500x375.png").read_bytes())
    else:
        image = _bad_images(tmp_path)[bad]
    cls = ("darknet", "classifier", "predict", REF / "data/classify40.data", ORACLE_CFG, weights_for("oracle-mini-pj"), image)
    det = ("darknet", "detector", "test", REF / "data/detect80.data", REF / "cfg/yolov3-tiny.cfg", weights_for("yolov3-tiny"), image,
           "-out", tmp_path / "pred")  # fmt: skip
    for args in (cls, det):
        code, _, err = _run(capsys, *args)
        last = err.strip().splitlines()[-1]  # the layer table comes first on stderr, as in darknet
        assert code == 2 and "Traceback" not in err and "Warning" not in err and last.startswith("cnnlab darknet: error: "), err
        assert bad in last and ("too large" in last) == (bad in ("bomb.png", "over_limit.png"))
    assert not (tmp_path / "pred.png").exists()


# -- files cnnlab writes -------------------------------------------------------------------------


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)], ids=["022", "027", "002"])
def test_weights_files_get_the_permissions_the_umask_gives(mask: int, mode: int, umask, weights_for, tmp_path: Path, capsys) -> None:
    """``partial`` and the training backups (``DarknetNet.save_weights``) were always 0600, checkpoints 0644."""
    umask(mask)
    out = tmp_path / "part.weights"
    assert _run(capsys, "darknet", "partial", ORACLE_CFG, weights_for("oracle-mini-pj"), out, "3")[0] == 0
    assert out.stat().st_mode & 0o777 == mode
    from cnnlab.darknet import load_darknet

    backup = tmp_path / "backup" / "net.backup"
    load_darknet(ORACLE_CFG).save_weights(backup)  # what classifier train calls for every backup
    assert backup.stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["net.backup", "part.weights"]  # no temp left


def test_partial_and_convert_refuse_to_overwrite_their_input_even_with_force(weights_for, tmp_path: Path, capsys) -> None:
    """``partial --force`` with OUT = the input weights replaced them with their first N layers."""
    src = tmp_path / "full.weights"
    src.write_bytes(weights_for("oracle-mini-pj").read_bytes())
    before = src.read_bytes()
    link = tmp_path / "link.weights"
    link.symlink_to(src)
    for out in (src, link, tmp_path / "." / "full.weights"):
        code, _, err = _run(capsys, "darknet", "partial", ORACLE_CFG, src, out, "3", "--force")
        _one_line_error(code, err)
        assert "is the input weights file" in err
    code, _, err = _run(capsys, "darknet", "convert", ORACLE_CFG, src, src, "--force")
    _one_line_error(code, err)
    assert src.read_bytes() == before
    cfg = tmp_path / "net.cfg"
    cfg.write_bytes(ORACLE_CFG.read_bytes())
    code, _, err = _run(capsys, "darknet", "convert", cfg, src, cfg, "--force")
    _one_line_error(code, err)
    assert "is the input cfg file" in err and cfg.read_bytes() == ORACLE_CFG.read_bytes()


def test_detector_test_refuses_to_draw_over_its_input_image(weights_for, tmp_path: Path, capsys) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes((REF / "images" / "img2_224x224.png").read_bytes())
    code, _, err = _run(capsys, "darknet", "detector", "test", REF / "data/detect80.data", REF / "cfg/yolov3-tiny.cfg",
                        weights_for("yolov3-tiny"), image, "-out", tmp_path / "photo", "--force")  # fmt: skip
    _one_line_error(code, err)
    assert "is the input image file" in err and image.read_bytes() == (REF / "images" / "img2_224x224.png").read_bytes()


# -- cfg keys no darknet reads -------------------------------------------------------------------


def test_unknown_cfg_keys_are_warned_once_per_key_and_section_without_changing_outputs(weights_for, tmp_path: Path, capsys) -> None:
    """darknet prints "Unused field" for an option its parser never reads (a typo, mostly); cnnlab ignored them silently."""
    lines = ORACLE_CFG.read_text().splitlines()
    convs = [i for i, line in enumerate(lines) if line.strip() == "[convolutional]"]
    for i in reversed(convs[:2]):  # the same typo in two sections: two warnings, one per section
        lines.insert(i + 1, "filers=99")
    net = lines.index("[net]")
    lines.insert(net + 1, "batchsize=4")
    typo = tmp_path / "typo.cfg"
    typo.write_text("\n".join(lines) + "\n")
    weights = weights_for("oracle-mini-pj")
    image = REF / "images" / "img1_500x375.png"

    code, clean_out, clean_err = _run(capsys, "darknet", "classifier", "predict", REF / "data/classify40.data", ORACLE_CFG, weights, image)
    assert code == 0 and "warning" not in clean_err
    code, out, err = _run(capsys, "darknet", "classifier", "predict", REF / "data/classify40.data", typo, weights, image)
    assert code == 0 and out == clean_out  # ignored, as darknet ignores it
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, warnings
    assert warnings[0].startswith(f"warning: {typo}:{net + 2}: [net] batchsize=4 is not an option darknet reads")
    assert all("filers=99" in w and "[convolutional]" in w for w in warnings[1:]) and warnings[1] != warnings[2]
    # the same cfg again in this process: already reported
    code, _, err = _run(capsys, "summary", f"darknet:{typo}")
    assert code == 0 and "warning:" not in err
