"""``cnnlab darknet detector map`` / ``calc_anchors`` print what the real AlexeyAB darknet printed on the
same files (``reference/map/``, made by ``make_map_reference.py``): byte for byte from darknet's
"calculation mAP" line to its last line, for all-point, 11- and 101-point AP, IoU threshold .75,
confidence thresholds .1 and .9 (darknet's "-nan" precision), and a ``difficult=`` list."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnnlab.darknet.detector_programs import calc_anchors, detector_map

from .make_map_reference import RUNS
from .mapset import MAP_REF as REF


def _flags(args: list[str]) -> dict[str, float | int]:
    kw: dict[str, float | int] = {}
    for flag, key, kind in (("-points", "points", int), ("-iou_thresh", "iou_thresh", float), ("-thresh", "thresh", float)):
        if flag in args:
            kw[key] = kind(args[args.index(flag) + 1])
    return kw


def _from(marker: bytes, text: bytes) -> bytes:
    return text[text.index(marker) :]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_map_printout_equals_darknet(mapset: Path, name: str) -> None:
    args = RUNS[name]
    out = io.StringIO()
    r = detector_map(data=args[1], cfg=args[2], weights=args[3], out=out, err=io.StringIO(), **_flags(args))  # type: ignore[arg-type]
    expected = _from(b"\n calculation mAP", (REF / f"{name}.stdout").read_bytes())
    assert _from(b"\n calculation mAP", out.getvalue().encode()) == expected
    assert f"{r.map * 100:.2f} %".encode() in expected


def test_calc_anchors_one_cluster_equals_darknet(mapset: Path) -> None:
    """k = 1 does not depend on the starting box: darknet's mean box and average IoU, to the digit."""
    out = io.StringIO()
    calc_anchors(data="map.data", num_of_clusters=1, width=128, height=128, force=True, out=out, err=io.StringIO())
    expected = (REF / "calc_anchors-k1.stdout").read_bytes()
    assert _from(b"\n all loaded.", out.getvalue().encode()) == _from(b"\n all loaded.", expected)
    assert (mapset / "anchors.txt").read_bytes() == (REF / "calc_anchors-k1.anchors.txt").read_bytes()


def glibc_rand(seed: int) -> Iterator[int]:
    """glibc's ``rand()`` after ``srand(seed)`` (random_r TYPE_3: x[i] = x[i-3] + x[i-31] mod 2^32, output >> 1)."""
    r = [seed or 1]
    for _ in range(30):  # 16807 · x mod (2^31 - 1), by Schrage's method as glibc computes it
        hi, lo = divmod(r[-1], 127773)
        word = 16807 * lo - 2836 * hi
        r.append(word + 2147483647 if word < 0 else word)
    r += r[:3]
    for i in range(34, 344):
        r.append((r[i - 31] + r[i - 3]) & 0xFFFFFFFF)
    while True:
        r.append((r[-31] + r[-3]) & 0xFFFFFFFF)
        yield r[-1] >> 1


def test_glibc_rand_replay() -> None:
    """The first outputs of glibc rand() after srand(1) (the C standard's default seed)."""
    g = glibc_rand(1)
    assert [next(g) for _ in range(3)] == [1804289383, 846930886, 1681692777]


def darknet_start(n: int, k: int, seed: int) -> list[int]:
    """matrix.c ``sample`` + ``random_centers``: a backwards Fisher-Yates shuffle with rand() % (i + 1)."""
    s, rand = list(range(n)), glibc_rand(seed)
    for i in range(n - 1, -1, -1):
        j = next(rand) % (i + 1)
        s[i], s[j] = s[j], s[i]
    return s[:k]


@pytest.mark.parametrize("k, clock", [(6, 1000), (6, 2026), (9, 77)])
def test_calc_anchors_from_darknets_start_equals_darknet(mapset: Path, k: int, clock: int) -> None:
    """darknet seeded with a fixed time(): started from the boxes it drew, cnnlab's k-means makes the same
    iterations, anchors and average IoU (darknet's float32 arithmetic, to the printed digit)."""
    from cnnlab.darknet import anchors as anchors_mod
    from cnnlab.darknet.detector_programs import (
        _anchor_boxes,
        _image_list,
        read_data_file,
    )

    paths = _image_list(read_data_file(Path("map.data")), Path("map.data"), "train", "")
    boxes, _, _ = _anchor_boxes(paths, Path("map.data"), 3, 128, 128, io.StringIO())
    r = anchors_mod.kmeans_anchors(boxes, k, start=darknet_start(len(boxes), k, clock))
    expected = (REF / f"calc_anchors-k{k}-t{clock}.stdout").read_bytes().decode()
    assert f"\n iterations = {r.iterations} \n" in expected
    assert "\n avg IoU = %2.2f %% \n" % r.avg_iou in expected
    assert f"anchors = {r.text(128)}\n" in expected
    assert r.text(128) == (REF / f"calc_anchors-k{k}-t{clock}.anchors.txt").read_text()


def _numbers(line: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", line)]


def test_valid_files_match_darknet(mapset: Path) -> None:
    """``detector valid`` (VOC per-class files, then eval=coco json): darknet's line count and image ids;
    the numbers agree within the network's float tolerance (the probs to the printed 1e-6, the pixel
    corners to 1e-3: PyTorch's convolutions and darknet's gemm round differently in the last bits)."""
    from cnnlab.darknet.detector_programs import detector_valid

    counts = dict(line.split() for line in (REF / "valid-counts.txt").read_text().splitlines())
    detector_valid(data="map.data", cfg="map-tiny.cfg", weights="map-tiny.weights", force=True, out=io.StringIO(), err=io.StringIO())
    detector_valid(data="map-coco.data", cfg="map-tiny.cfg", weights="map-tiny.weights", force=True, out=io.StringIO(), err=io.StringIO())
    for name, count in counts.items():
        ours = (mapset / "results" / name).read_text().splitlines()
        theirs = (REF / f"valid-{name}.head").read_text().splitlines()
        assert len(ours) == int(count), name
        for a, b in zip(ours[:25] + ours[-2:], theirs):
            assert a.split(" ", 1)[0] == b.split(" ", 1)[0]  # image id (VOC) / the json's first key
            na, nb = _numbers(a), _numbers(b)
            assert len(na) == len(nb)
            assert na == pytest.approx(nb, abs=1e-3), (name, a, b)
            prob = -1 if name.endswith(".json") else 1
            assert not na or na[prob] == pytest.approx(nb[prob], abs=2e-6)
    # the COCO file is a JSON list, as darknet closes it
    import json

    assert len(json.loads((mapset / "results" / "coco_results.json").read_text())) == int(counts["coco_results.json"]) - 2
