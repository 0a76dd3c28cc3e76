"""``detector map`` / ``valid`` / ``calc_anchors`` as programs: label paths, errors, files, the CLI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.darknet.detector_programs import calc_anchors, detector_map, map_of
from cnnlab.darknet.model import load_darknet
from cnnlab.data.sources.yolo_labels import darknet_records
from cnnlab.errors import CnnlabError

from .mapset import MAP_REF as REF
from .mapset import read_labels_file


def test_map_reads_labels_as_darknets_read_boxes() -> None:
    """darknet_records: float32 records in any line layout, up to the first that does not parse."""
    boxes, whole = darknet_records(b"0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n")
    assert whole and boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, np.array([[0, .5, .5, .2, .2], [1, .3, .3, .1, .1]], np.float32))
    boxes, whole = darknet_records(b"0 0.5 0.5 0.2 0.2\nx 0.3 0.3 0.1 0.1\n2 0.1 0.1 0.1 0.1\n")
    assert not whole and len(boxes) == 1
    boxes, whole = darknet_records(b"0 0.5 0.5 0.2 0.2 1 0.3 0.3 0.1\n0.1\n")  # fscanf does not care about lines
    assert whole and len(boxes) == 2


def test_map_of_equals_the_printed_map(mapset: Path) -> None:
    """The in-memory entry point (for -map during training) gives the figures the command prints."""
    printed = detector_map(data="map.data", cfg="map-tiny.cfg", weights="map-tiny.weights", points=11, out=io.StringIO(), err=io.StringIO())
    model = load_darknet("map-tiny.cfg", "map-tiny.weights", "alexeyab").eval()
    r = map_of(model, "map.data", points=11)
    assert r.map == printed.map and list(r.ap) == list(printed.ap) and (r.tp, r.fp, r.fn) == (printed.tp, printed.fp, printed.fn)


def test_map_cli_errors_are_one_line(mapset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (mapset / "two.names").write_text("a\nb\n")
    (mapset / "two.data").write_text("classes=2\nvalid=valid.txt\nnames=two.names\n")
    assert main(["darknet", "detector", "map", "two.data", "map-tiny.cfg", "map-tiny.weights"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "cnnlab darknet: error: two.names has 2 names but map-tiny.cfg has classes=3; give one name per class (darknet stops here too)"
    assert main(["darknet", "detector", "map", "map.data", "map-tiny.cfg", "map-tiny.weights", "-points", "1"]) == 2
    assert "-points 1: use 0 (area under the curve), 11 (VOC2007) or 101 (COCO)" in capsys.readouterr().err


def test_map_cli_prints_darknets_report(mapset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["darknet", "detector", "map", "map.data", "map-tiny.cfg", "map-tiny.weights", "-points", "101", "-letter_box"]) == 0
    cap = capsys.readouterr()
    expected = (REF / "map-points101.stdout").read_bytes()
    assert cap.out.encode()[cap.out.encode().index(b"\n calculation") :] == expected[expected.index(b"\n calculation") :]
    assert "darknet's detector map ignores -letter_box" in cap.err  # the cfg has no letter_box=1


def test_missing_label_prints_darknets_line(mapset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (mapset / "one.txt").write_text("img/000.png\nnolabel/000.png\n")
    (mapset / "nolabel").mkdir(exist_ok=True)
    (mapset / "nolabel" / "000.png").write_bytes((mapset / "img" / "000.png").read_bytes())
    (mapset / "one.data").write_text("classes=3\nvalid=one.txt\nnames=map.names\n")
    r = detector_map(data="one.data", cfg="map-tiny.cfg", weights="map-tiny.weights", out=(out := io.StringIO()), err=(err := io.StringIO()))
    assert "Can't open label file. (This can be normal only if you use MSCOCO): nolabel/000.txt \n" in out.getvalue()
    assert "1 images have no label file (AlexeyAB's rule: NAME.txt beside the image" in err.getvalue()
    assert r.unique_truth_count == len(read_labels_file(REF / "labels.txt")["img/000.txt"].splitlines())


def test_calc_anchors_files_and_cfg(mapset: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    calc_anchors(data="map.data", num_of_clusters=6, width=128, height=128, seed=3, write_cfg="map-tiny.cfg", out_dir=str(tmp_path),
                 cfg_out=str(tmp_path / "new.cfg"), out=out, err=io.StringIO())  # fmt: skip
    line = (tmp_path / "anchors.txt").read_text()
    assert f"anchors = {line}\n" in out.getvalue() and len(line.split(",")) == 12
    assert (tmp_path / "counters_per_class.txt").read_text() == "counters_per_class = 19, 52, 52"
    cfg = (tmp_path / "new.cfg").read_text()
    assert cfg.count(f"anchors = {line}") == 2 and "10,14,  23,27" not in cfg
    net = load_darknet(tmp_path / "new.cfg", None, "alexeyab")  # still a valid cfg, with the new anchors
    head = net.layers[net.detection_layers[0]]
    assert [round(a) for a in head.anchors] == [int(v) for v in line.replace(",", " ").split()]
    with pytest.raises(CnnlabError, match="anchors.txt already exists; pass --force"):
        calc_anchors(data="map.data", num_of_clusters=6, width=128, height=128, out_dir=str(tmp_path), out=io.StringIO())
    with pytest.raises(CnnlabError, match=r"map-tiny.cfg:\d+: \[yolo\] has num=6 but 4 anchors were computed"):
        calc_anchors(data="map.data", num_of_clusters=4, width=128, height=128, write_cfg="map-tiny.cfg", out_dir=str(tmp_path / "b"),
                     cfg_out=str(tmp_path / "b.cfg"), out=io.StringIO())  # fmt: skip
    with pytest.raises(CnnlabError, match="set the network input size: -width W -height H"):
        calc_anchors(data="map.data", num_of_clusters=4, out=io.StringIO())


def test_ranks_share_the_images(mapset: Path) -> None:
    """Two 'ranks' each measure every other image (accumulate_map rank/world); merged, the figures are the
    single pass's, to the printed digit."""
    from cnnlab.darknet.detector_programs import accumulate_map
    from cnnlab.darknet.map import MapAccumulator

    model = load_darknet("map-tiny.cfg", "map-tiny.weights", "alexeyab").eval()
    parts = []
    for rank in range(2):
        acc = MapAccumulator(3, points=101)
        with torch.no_grad():
            accumulate_map(model, "map.data", acc, kind="default", out=io.StringIO(), err=io.StringIO(), rank=rank, world=2)
        parts.append(acc)
    assert {im.index for im in parts[0].images} == set(range(0, 24, 2))
    whole = map_of(model, "map.data", points=101)
    assert parts[1].merge(parts[0]).compute().lines(["r", "g", "b"]) == whole.lines(["r", "g", "b"])


def test_calc_anchors_reports_wrong_labels_and_draws(mapset: Path, tmp_path: Path) -> None:
    """A box outside 0..1 gets darknet's "Wrong label" line (and still counts, as in darknet); -show draws anchors.png."""
    from PIL import Image

    (tmp_path / "a.png").write_bytes((mapset / "img" / "000.png").read_bytes())
    (tmp_path / "a.txt").write_text("0 0.5 0.5 1.5 0.25\n1 0.5 0.5 0.25 0.5\n")
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.png'}\n")
    (tmp_path / "w.data").write_text(f"classes=2\ntrain={tmp_path / 'list.txt'}\n")
    out = io.StringIO()
    calc_anchors(data=str(tmp_path / "w.data"), num_of_clusters=2, width=64, height=64, show=True, out_dir=str(tmp_path), out=out, err=io.StringIO())
    text = out.getvalue()
    assert f"\n\nWrong label: {tmp_path / 'a.txt'} - j = 0, x = 0.500000, y = 0.500000, width = 1.500000, height = 0.250000 \n" in text
    assert "anchors =  16, 32,  96, 16\n" in text  # both boxes kept: 1.5*64 x .25*64 and .25*64 x .5*64, by area
    with Image.open(tmp_path / "anchors.png") as im:
        assert im.size == (64, 64)
