from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.data.imagenet.bbox import convert_bboxes
from cnnlab.data.imagenet.ilsvrc import Options, prepare_ilsvrc
from ilsvrc_fixtures import SORTED, Ilsvrc, add_bytes


def voc(filename_field: str, w: int, h: int, boxes: list[tuple[str, int, int, int, int]]) -> bytes:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in boxes
    )
    return (f"<annotation><folder>x</folder><filename>{filename_field}</filename>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>").encode()


XMLS = {
    "n01440764_1.xml": voc("n01440764_1", 100, 80, [("n01440764", 10, 20, 50, 60)]),
    "n01440764_2.xml": voc("%s", 100, 80, [("n01440764", 50, 60, 10, 20)]),  # '%s' name, reversed corners
    "n01443537_7.xml": voc("n01443537_7", 100, 80, [("n01443537", -5, 10, 120, 90), ("n01443537", 30, 30, 30, 50)]),
    "n01443537_8.xml": b"<annotation><size>",  # broken XML
}


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def check_rows(rows: list[list[str]]) -> None:
    assert rows[0] == ["filename", "wnid", "xmin", "ymin", "xmax", "ymax"]
    assert rows[1:] == [
        ["n01440764_1.JPEG", "n01440764", "10", "20", "50", "60"],
        ["n01440764_2.JPEG", "n01440764", "10", "20", "50", "60"],  # swapped back; name from the XML file
        ["n01443537_7.JPEG", "n01443537", "0", "10", "100", "80"],  # clamped to the 100x80 image
    ]


EXPECTED_FIXES = {"files": 3, "boxes": 3, "bad_xml": 1, "filename_field_ignored": 1, "swapped_x": 1,
                  "swapped_y": 1, "clamped": 1, "dropped_empty": 1}


def test_bbox_from_folder_fixes_and_counts(tmp_path: Path) -> None:
    src = tmp_path / "xml" / "n01440764"
    src.mkdir(parents=True)
    for name, data in XMLS.items():
        (src / name).write_bytes(data)
    fixes = convert_bboxes(tmp_path / "xml", tmp_path / "boxes.csv")
    assert fixes == EXPECTED_FIXES
    check_rows(read_rows(tmp_path / "boxes.csv"))
    convert_bboxes(tmp_path / "xml", tmp_path / "rel.csv", relative=True)
    rel = read_rows(tmp_path / "rel.csv")
    assert rel[1] == ["n01440764_1.JPEG", "n01440764", "0.100000", "0.250000", "0.500000", "0.750000"]
    assert rel[3][2:] == ["0.000000", "0.125000", "1.000000", "1.000000"]


def test_bbox_from_tar_of_class_tars_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # ILSVRC2012_bbox_train_v2.tar.gz holds one tar.gz per class.
    outer = tmp_path / "bbox.tar.gz"
    with tarfile.open(outer, "w:gz") as tf:
        for wnid in ("n01440764", "n01443537"):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as inner:
                for name, data in XMLS.items():
                    if name.startswith(wnid):
                        add_bytes(inner, f"Annotation/{wnid}/{name}", data)
                add_bytes(inner, "../evil.xml", XMLS["n01440764_1.xml"])
            add_bytes(tf, f"{wnid}.tar.gz", buf.getvalue())
    assert main(["data", "bbox", str(outer), "--out", str(tmp_path / "b.csv")]) == 0
    check_rows(read_rows(tmp_path / "b.csv"))
    assert "unsafe_member=2" in capsys.readouterr().out
    assert main(["data", "bbox", str(tmp_path / "nothing"), "--out", str(tmp_path / "c.csv")]) == 2


def test_darknet_lists(ilsvrc_fixture: Ilsvrc, tmp_path: Path) -> None:
    fx = ilsvrc_fixture
    out = tmp_path / "data"
    prepare_ilsvrc(out, fx.devkit, fx.train, fx.val, opts=Options(progress=False))
    assert main(["data", "darknet", str(out)]) == 0
    assert (out / "labels.txt").read_text().split() == SORTED
    names = (out / "names.list").read_text().splitlines()
    assert names[0] == "tench" and len(names) == len(SORTED)
    cfg = dict(line.split("=", 1) for line in (out / "imagenet.data").read_text().splitlines())
    assert cfg["classes"] == str(len(SORTED)) and cfg["top"] == "5"
    train = Path(cfg["train"]).read_text().splitlines()
    valid = Path(cfg["valid"]).read_text().splitlines()
    assert len(train) == len(list((out / "train").rglob("*.JPEG"))) and len(valid) == 8
    for path in train + valid:
        # darknet's rule: the label is the class string found in the path; exactly one must match.
        assert [w for w in SORTED if w in path] == [Path(path).parent.name]
        assert Path(path).is_file()
    bad = tmp_path / "n01440764_stuff"
    bad.mkdir()
    (bad / "train" / "n01440764").mkdir(parents=True)
    (bad / "train" / "n01440764" / "x.JPEG").write_bytes(b"x")
    assert main(["data", "darknet", str(bad)]) == 2


def test_ilsvrc_with_bbox_writes_boxes_and_reports_fixes(ilsvrc_fixture: Ilsvrc, tmp_path: Path) -> None:
    src = tmp_path / "xml"
    src.mkdir()
    for name, data in XMLS.items():
        (src / name).write_bytes(data)
    fx = ilsvrc_fixture
    result = prepare_ilsvrc(tmp_path / "out", fx.devkit, None, fx.val, bbox=src, opts=Options(progress=False))
    assert result["bbox"] == EXPECTED_FIXES
    check_rows(read_rows(tmp_path / "out" / "boxes.csv"))
