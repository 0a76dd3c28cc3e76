"""Make ``tests/darknet/reference/map/``: the real AlexeyAB darknet's ``detector map`` and ``calc_anchors``
printouts on the tiny set of ``mapset.py``, for ``test_map_reference.py``.

The labels are made from the network's own detections (cnnlab's, thresh .005 + NMS .45) so that the
figures are not all zero: per image, truths copying the two best boxes (TPs), one box shifted by
0.3 of its width (IoU ≈ .54: a TP at .5, not at .75), one box labelled with the next class (a wrong
class), one box from the middle of the ranking, one random box nobody finds; for ``hard/`` (the
difficult list) the fifth box. Random choices by ``RandomState(7)`` drop some of them per image.

Usage (darknet built from AlexeyAB's source, CPU, e.g.
``make GPU=0 CUDNN=0 OPENCV=0 OPENMP=0 AVX=0``)::

    python tests/darknet/make_map_reference.py --darknet /tmp/map-dk/darknet [--work /tmp/map-set]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cnnlab.darknet.detector_programs import _detect, _detection_head
from cnnlab.darknet.programs import _load
from cnnlab.data.sources.yolo_labels import label_path
from tests.darknet.mapset import NAMES, build, image_paths

OUT = Path(__file__).resolve().parent / "reference" / "map"
# name: darknet arguments after "detector"
RUNS = {
    "map-points0": ["map", "map.data", "map-tiny.cfg", "map-tiny.weights", "-dont_show"],
    "map-points11": ["map", "map.data", "map-tiny.cfg", "map-tiny.weights", "-points", "11", "-dont_show"],
    "map-points101": ["map", "map.data", "map-tiny.cfg", "map-tiny.weights", "-points", "101", "-dont_show"],
    "map-iou75": ["map", "map.data", "map-tiny.cfg", "map-tiny.weights", "-iou_thresh", "0.75", "-dont_show"],
    "map-thresh10": ["map", "map.data", "map-tiny.cfg", "map-tiny.weights", "-thresh", "0.1", "-points", "11", "-dont_show"],
    "map-difficult": ["map", "map-difficult.data", "map-tiny.cfg", "map-tiny.weights", "-thresh", "0.1", "-dont_show"],
    "map-thresh90": ["map", "map.data", "map-tiny.cfg", "map-tiny.weights", "-thresh", "0.9", "-dont_show"],
    "map-letterbox": ["map", "map.data", "map-tiny-lb.cfg", "map-tiny.weights", "-points", "11", "-dont_show"],
}


def _line(cls: int, x0: float, y0: float, x1: float, y1: float) -> str | None:
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in (x0, y0, x1, y1))
    if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
        return None
    return "%d %.6f %.6f %.6f %.6f\n" % (cls, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)


def make_labels(root: Path) -> dict[str, str]:
    model = _load(str(root / "map-tiny.cfg"), str(root / "map-tiny.weights"), "alexeyab", False, io.StringIO())
    kind = _detection_head(model, io.StringIO())
    rs = np.random.RandomState(7)
    labels: dict[str, str] = {}
    for path in image_paths():
        d, _, _ = _detect(model, root / path, 0.005, 0.45, kind, False)
        box_i, cls = np.nonzero(d.probs > 0)
        order = np.argsort(-d.probs[box_i, cls], kind="stable")
        seen: list[int] = []
        picks: list[tuple[int, int]] = []
        for k in order:  # the best (box, class) of each distinct box, by prob
            if box_i[k] not in seen:
                seen.append(int(box_i[k]))
                picks.append((int(box_i[k]), int(cls[k])))
        lines: list[str | None] = []
        for rank, (b, c) in enumerate(picks[:4] + picks[len(picks) // 2 : len(picks) // 2 + 1]):
            if rs.rand() < 0.2:
                continue  # dropped: this detection becomes an FP
            x, y, w, h = (float(v) for v in d.boxes[b])
            shift = 0.3 * w if rank == 2 else 0.0
            c = (c + 1) % 3 if rank == 3 else c
            lines.append(_line(c, x - w / 2 + shift, y - h / 2, x + w / 2 + shift, y + h / 2))
        cx, cy, s = rs.uniform(0.2, 0.8), rs.uniform(0.2, 0.8), rs.uniform(0.1, 0.3)
        lines.append(_line(int(rs.randint(3)), cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2))  # nobody finds it
        labels[label_path(path, "alexeyab")] = "".join(line for line in lines if line)
        hard = ""
        if len(picks) > 4 and rs.rand() < 0.6:
            x, y, w, h = (float(v) for v in d.boxes[picks[4][0]])
            hard = _line(picks[4][1], x - w / 2, y - h / 2, x + w / 2, y + h / 2) or ""
        labels[label_path(path.replace("img/", "hard/"), "alexeyab")] = hard
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--darknet", required=True, help="the AlexeyAB darknet binary")
    ap.add_argument("--work", default="/tmp/map-set", help="scratch folder for the set")
    a = ap.parse_args()
    root = Path(a.work)
    build(root)
    labels = make_labels(root)
    build(root, labels)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "labels.txt").write_text("".join(f"# {p}\n{t}" for p, t in labels.items()))
    darknet = str(Path(a.darknet).resolve())
    for name, args in RUNS.items():
        r = subprocess.run([darknet, "detector", *args], cwd=root, capture_output=True, check=True)  # bytes: keep the \r
        (OUT / f"{name}.stdout").write_bytes(r.stdout)
    _valid_reference(darknet, root)
    shim = _time_shim(root)
    for k, clock in ANCHOR_RUNS:
        env = dict(os.environ, LD_PRELOAD=str(shim), MAP_REF_TIME=str(clock)) if clock else None
        r = subprocess.run([darknet, "detector", "calc_anchors", "map.data", "-num_of_clusters", str(k), "-width", "128", "-height", "128"],
                           cwd=root, capture_output=True, check=True, env=env)  # fmt: skip
        name = f"calc_anchors-k{k}" + (f"-t{clock}" if clock else "")
        (OUT / f"{name}.stdout").write_bytes(r.stdout)
        (OUT / f"{name}.anchors.txt").write_bytes((root / "anchors.txt").read_bytes())


HEAD = 25  # lines of each results file kept (the files are ~300 kB each)


def _valid_reference(darknet: str, root: Path) -> None:
    """``detector valid`` (VOC files and COCO json): line counts and the first lines of each file."""
    (root / "results").mkdir(exist_ok=True)
    counts = []
    for data, files in (("map.data", [f"comp4_det_test_{n}.txt" for n in NAMES]), ("map-coco.data", ["coco_results.json"])):
        subprocess.run([darknet, "detector", "valid", data, "map-tiny.cfg", "map-tiny.weights"], cwd=root, capture_output=True, check=True)
        for f in files:
            lines = (root / "results" / f).read_text().splitlines(keepends=True)
            counts.append(f"{f} {len(lines)}\n")
            (OUT / f"valid-{f}.head").write_text("".join(lines[:HEAD] + lines[-2:]))
    (OUT / "valid-counts.txt").write_text("".join(counts))


# darknet seeds rand() with time(0) before its k-means draws its starting boxes; this preloaded time()
# makes the draw reproducible, and the test replays glibc's rand() to start cnnlab from the same boxes
_SHIM = """#include <stdlib.h>
#include <time.h>
time_t time(time_t *t) { time_t v = (time_t)atol(getenv("MAP_REF_TIME")); if (t) *t = v; return v; }
"""
ANCHOR_RUNS = [(1, 0), (6, 1000), (6, 2026), (9, 77)]  # (clusters, fixed time; 0 = the real clock)


def _time_shim(root: Path) -> Path:
    src, lib = root / "timeshim.c", root / "timeshim.so"
    src.write_text(_SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(src)], check=True)
    return lib


if __name__ == "__main__":
    main()
