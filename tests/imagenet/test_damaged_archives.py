"""Damaged ILSVRC archives and images no encoder takes: counted in report.json, never a traceback,
and a re-run with the repaired archive completes exactly the classes that were not complete."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.data.imagenet import imagecheck
from cnnlab.data.imagenet.download import DownloadOptions, download
from cnnlab.data.imagenet.urllist import read_url_list
from httpserver import LocalServer, fixed
from ilsvrc_fixtures import COLORS, SORTED, Ilsvrc, add_bytes, encode, rgb_image

A = SORTED[0]


def _class_tar(wnid: str, n: int, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as inner:
        for k in range(n):
            add_bytes(inner, f"{wnid}_{k}.JPEG", encode(rgb_image(COLORS[wnid], 10 * k + len(wnid), (64, 48))))
        for name, data in (extra or {}).items():
            add_bytes(inner, name, data)
    return buf.getvalue()


def _train_tar(path: Path, inner: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as outer:
        for wnid, data in inner.items():
            add_bytes(outer, f"{wnid}.tar", data)
    return path


def _wide_png() -> bytes:
    """65,501 × 2 px: a valid PNG that no JPEG can hold (the issue's reproduction)."""
    buf = io.BytesIO()
    Image.new("RGB", (65_501, 2), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def _ilsvrc(fx: Ilsvrc, train: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    code = main(["data", "ilsvrc", "--train", str(train), "--devkit", str(fx.devkit), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, json.loads((out / "report.json").read_text()), err


def _files(out: Path, wnid: str) -> list[str]:
    return sorted(p.name for p in (out / "train" / wnid).iterdir())


@pytest.mark.parametrize("where", ["in-data", "at-header", "mid-header"])
def test_class_tar_damaged_midway_is_not_done(ilsvrc_fixture: Ilsvrc, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    """The issue's reproduction: a class whose inner tar was corrupt was marked done; the re-run with
    the repaired archive kept 2 of its 5 images. Cut at a header, tarfile itself sees no damage."""
    good = {w: _class_tar(w, 5) for w in SORTED}
    third = tarfile.open(fileobj=io.BytesIO(good[A])).getmembers()[2]
    end = {"in-data": third.offset_data + 100, "at-header": third.offset, "mid-header": third.offset + 200}[where]
    cut = dict(good, **{A: good[A][:end]})  # 2 whole images, then the third cut short
    code, report, err = _ilsvrc(ilsvrc_fixture, _train_tar(tmp_path / "cut.tar", cut), tmp_path / "out", capsys)
    assert code == 1 and "damaged" in err and len(err.strip().splitlines()) == 1
    assert report["counts"]["corrupt_archive"] == 1 and f"train/{A}.tar" in report["failures"]["corrupt_archive"][0]
    assert len(_files(tmp_path / "out", A)) == 2  # what was readable is kept for now
    code, report, _ = _ilsvrc(ilsvrc_fixture, _train_tar(tmp_path / "good.tar", good), tmp_path / "out", capsys)
    assert code == 0 and "corrupt_archive" not in report["counts"]
    assert all(len(_files(tmp_path / "out", w)) == 5 for w in SORTED)
    assert report["counts"]["ok"] == 20


def test_truncated_outer_tar_is_counted_and_resumable(ilsvrc_fixture: Ilsvrc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's reproduction: a tarfile.ReadError traceback and no report."""
    good = _train_tar(tmp_path / "good.tar", {w: _class_tar(w, 4) for w in SORTED})
    data = good.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) * 5 // 8])
    code, report, _ = _ilsvrc(ilsvrc_fixture, cut, tmp_path / "out", capsys)
    assert code == 1 and report["counts"]["corrupt_archive"] >= 1
    assert report["counts"]["missing_class"] >= 1
    assert report["kept"] < 16
    code, report, _ = _ilsvrc(ilsvrc_fixture, good, tmp_path / "out", capsys)
    assert code == 0 and report["kept"] == 16 and all(len(_files(tmp_path / "out", w)) == 4 for w in SORTED)


def test_empty_class_tars_are_reported(ilsvrc_fixture: Ilsvrc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inner = {w: _class_tar(w, 2) for w in SORTED}
    inner[SORTED[1]] = b""  # a zero-byte member
    inner[SORTED[2]] = _class_tar(SORTED[2], 0)  # a tar with no members
    code, report, _ = _ilsvrc(ilsvrc_fixture, _train_tar(tmp_path / "t.tar", inner), tmp_path / "out", capsys)
    assert code == 0
    assert report["failures"]["empty_class"] == [f"train/{SORTED[1]}.tar", f"train/{SORTED[2]}.tar"]


def test_image_no_jpeg_can_hold_is_counted_by_ilsvrc(ilsvrc_fixture: Ilsvrc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inner = {w: _class_tar(w, 2) for w in SORTED}
    inner[A] = _class_tar(A, 2, {f"{A}_wide.JPEG": _wide_png()})
    code, report, _ = _ilsvrc(ilsvrc_fixture, _train_tar(tmp_path / "t.tar", inner), tmp_path / "out", capsys)
    assert code == 0 and report["failures"]["too_large"] == [f"train/{A}/{A}_wide.JPEG"]
    assert report["kept"] == 8
    code, again, _ = _ilsvrc(ilsvrc_fixture, _train_tar(tmp_path / "t.tar", inner), tmp_path / "out", capsys)
    assert code == 0 and again["counts"] == report["counts"]  # a re-run does not crash either


def test_image_no_jpeg_can_hold_is_counted_by_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = encode(rgb_image(COLORS[A], 1))
    odd = encode(rgb_image(COLORS[A], 2))
    real = imagecheck.normalise

    def normalise(data: bytes, **kw):  # an encoder failure nobody foresaw, for one image
        if data == odd:
            raise RuntimeError("encoder fell over")
        return real(data, **kw)

    monkeypatch.setattr(imagecheck, "normalise", normalise)
    routes = {"/ok.jpg": fixed(ok), "/wide.png": fixed(_wide_png(), "image/png"), "/odd.jpg": fixed(odd)}
    with LocalServer(routes, max_requests=20, lifetime=30) as srv:
        lst = tmp_path / "urls.txt"
        lst.write_text(f"{A}_1\t{srv.base}/ok.jpg\n{A}_2\t{srv.base}/wide.png\n{A}_3\t{srv.base}/odd.jpg\n")
        entries, list_report = read_url_list(lst)
        result = download(entries, tmp_path / "out", DownloadOptions(workers=2, timeout=2, progress=False), list_report)
    assert result["counts"] == {"ok": 1, "too_large": 1, "error": 1}
    assert result["failures"]["error"] == [f"{A}_3"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["counts"] == result["counts"]


def test_truncated_val_tar_is_counted(ilsvrc_fixture: Ilsvrc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ilsvrc_fixture.val.read_bytes()
    cut = tmp_path / "val.tar"
    cut.write_bytes(data[: len(data) // 2 + 100])
    out = tmp_path / "out"
    code = main(["data", "ilsvrc", "--val", str(cut), "--devkit", str(ilsvrc_fixture.devkit), "--out", str(out), "--no-progress"])
    assert code == 1 and "Traceback" not in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["corrupt_archive"] == 1 and 0 < report["kept"] < 8
