"""Reference deltas of darknet's own [yolo]/[region] layers, for ``test_yolo_loss.py``.

``reference/yolo_loss.npz`` holds, per case, random raw layer inputs and truths and what the real
darknet's forward_yolo_layer / forward_region_layer computed from them (delta, cost, AlexeyAB's
total_bbox and rewritten_bbox). Rebuild it from darknet builds made from the two source trees
(AlexeyAB 59596d7 with ``make LIBSO=1``, pjreddie f6afaab with ``make``; CPU, no OpenCV)::

    python tests/darknet/yolo_loss_ref.py --alexeyab DIR --pjreddie DIR

The small C programs in ``harness/`` (cnnlab's own code) call the layer functions of the build's
libdarknet.so; nothing of darknet is kept in the repository.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.darknet.cfg import parse_cfg
from cnnlab.darknet.layers import BuildContext, Region, Yolo

HERE = Path(__file__).parent
NPZ = HERE / "reference" / "yolo_loss.npz"
YOLO_ANCHORS = "10,14, 23,27, 37,58, 81,82, 135,169, 50,40"
REGION_ANCHORS = "0.57,0.67, 1.87,2.06, 3.33,5.47, 4.2,3.1"
CLASSES, GRID, NET, BATCH = 3, (4, 3), (160, 128), 2
KIND = {"iou": 0, "giou": 1, "mse": 2, "diou": 3, "ciou": 4}


@dataclass(frozen=True)
class Case:
    flavor: str
    kind: str  # "yolo" | "region"
    opts: str
    seed: int = 0
    same_cell: bool = False  # later truths of an image share the first one's cell
    seen: int | None = None

    @property
    def name(self) -> str:
        opts = self.opts.strip().replace("\n", ",") or "defaults"
        return f"{self.flavor}-{self.kind}-{opts}-s{self.seed}{'-same' if self.same_cell else ''}{'' if self.seen is None else f'-seen{self.seen}'}"


AB_YOLO = [
    "", "iou_normalizer=0.5\nignore_thresh=0.3", "iou_loss=ciou\niou_normalizer=0.07", "iou_loss=giou\niou_normalizer=0.5",
    "iou_loss=diou", "iou_loss=iou", "iou_loss=ciou\nscale_x_y=1.05\niou_thresh=0.213", "iou_thresh=0.3\nlabel_smooth_eps=0.1",
    "iou_thresh=0.2\niou_thresh_kind=giou", "counters_per_class=100,300,50\ncls_normalizer=0.7\nobj_normalizer=2",
    "objectness_smooth=1\nignore_thresh=0.3", "truth_thresh=0.4\nignore_thresh=0.2", "focal_loss=1",
    "max_delta=0.05\niou_loss=ciou", "new_coords=1\nscale_x_y=2.0", "new_coords=1\niou_loss=ciou", "show_details=0\niou_loss=ciou",
]
REGION_OPTS = ["softmax=1", "softmax=1\nbias_match=1\nrescore=1\nthresh=0.6", "softmax=1\nobject_scale=5\nnoobject_scale=0.5\nclass_scale=2\ncoord_scale=1.5"]
CASES = (
    [Case("alexeyab", "yolo", o, s, same) for o in AB_YOLO for s, same in ((0, False), (1, True))]
    + [Case("pjreddie", "yolo", o, s, same) for o in ("", "ignore_thresh=0.3", "truth_thresh=0.4\nignore_thresh=0.2") for s, same in ((0, False), (1, True))]
    + [Case(f, "region", o, s, same, seen) for f in ("pjreddie", "alexeyab") for o in REGION_OPTS for s, same, seen in ((0, False, None), (1, True, 0))]
    + [Case("pjreddie", "region", "softmax=0\nobject_scale=5\nclass_scale=2", 2, True, None)]
)


def build_layer(case: Case) -> Yolo | Region:
    w, h = GRID
    if case.kind == "yolo":
        mx = "max=20\n" if case.flavor == "alexeyab" else ""
        sec = parse_cfg(f"[net]\n[yolo]\nmask=1,2,3\nanchors={YOLO_ANCHORS}\nnum=6\nclasses={CLASSES}\n{mx}{case.opts}\n")[1]
        return Yolo(sec, BuildContext(case.flavor, 5, (3 * (5 + CLASSES), h, w), [], *NET))
    mx = "max=30\n" if case.flavor == "alexeyab" else ""
    sec = parse_cfg(f"[net]\n[region]\nanchors={REGION_ANCHORS}\nnum=4\nclasses={CLASSES}\ncoords=4\n{mx}{case.opts}\n")[1]
    return Region(sec, BuildContext(case.flavor, 5, (4 * (5 + CLASSES), h, w), [], *NET))


def make_inputs(case: Case, layer: Yolo | Region) -> tuple[np.ndarray, np.ndarray]:
    """Raw layer input (B, C, H, W) and truths (B, 8, 5) ``[cls, x, y, w, h]`` padded with cls = -1."""
    rng = np.random.default_rng(case.seed)
    c, h, w = layer.in_shape
    raw = rng.normal(0, 1.5, (BATCH, c, h, w)).astype(np.float32)
    truth = np.zeros((BATCH, 8, 5), np.float32)
    truth[..., 0] = -1
    for b in range(BATCH):
        for t in range(int(rng.integers(1, 8))):
            cx, cy = rng.uniform(0.05, 0.95, 2)
            if case.same_cell and t > 0:
                cx, cy = truth[b, 0, 1] + rng.uniform(-0.01, 0.01), truth[b, 0, 2] + rng.uniform(-0.01, 0.01)
            truth[b, t] = [rng.integers(0, CLASSES), cx, cy, rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6)]
    return raw, truth


def _darknet_truth(truth: np.ndarray, rows: int, cols: int) -> bytes:
    """darknet's truth buffer: ``rows`` boxes per image of x, y, w, h, class (and zeros), unused rows 0."""
    out = np.zeros((truth.shape[0], rows, cols), np.float32)
    for b in range(truth.shape[0]):
        real = truth[b][truth[b, :, 0] >= 0]
        out[b, : len(real), :5] = real[:, [1, 2, 3, 4, 0]]
    return out.tobytes()


def _request(case: Case, layer: Yolo | Region, raw: np.ndarray, truth: np.ndarray) -> tuple[str, bytes]:
    """(harness name, its input file) for one case."""
    w, h = GRID
    seen = 100000 if case.seen is None else case.seen
    if case.kind == "yolo" and case.flavor == "alexeyab":
        ly = layer
        assert isinstance(ly, Yolo)
        head = [BATCH, w, h, 3, 6, CLASSES, *NET, ly.max_boxes, KIND[ly.iou_loss], KIND[ly.iou_thresh_kind], int(ly.objectness_smooth),
                int(ly.new_coords), int(ly.focal_loss), int(ly.show_details), int(ly.classes_multipliers is not None)]
        md = -1.0 if ly.max_delta == float("inf") else ly.max_delta
        buf = struct.pack("16i", *head) + struct.pack("3i", 1, 2, 3)
        buf += struct.pack("9f", ly.ignore_thresh, ly.truth_thresh, ly.iou_thresh, ly.iou_normalizer, ly.obj_normalizer,
                           ly.cls_normalizer, ly.label_smooth_eps, ly.scale_x_y, md)
        cm = ly.classes_multipliers or []
        buf += struct.pack("12f", *ly.anchors[:12]) + struct.pack(f"{len(cm)}f", *cm)
        return "yolo_ab", buf + raw.tobytes() + _darknet_truth(truth, ly.max_boxes, 6)
    if case.kind == "region" and case.flavor == "alexeyab":
        ly = layer
        assert isinstance(ly, Region)
        bits = int(ly.softmax) | int(ly.bias_match) << 1 | int(ly.rescore) << 2
        buf = struct.pack("10i", BATCH, w, h, 4, CLASSES, ly.max_boxes, *NET, seen, bits) + struct.pack("8f", *ly.anchors[:8])
        buf += struct.pack("5f", ly.thresh, ly.coord_scale, ly.object_scale, ly.noobject_scale, ly.class_scale)
        return "region_ab", buf + raw.tobytes() + _darknet_truth(truth, ly.max_boxes, 5)
    if case.kind == "yolo":
        assert isinstance(layer, Yolo)
        buf = struct.pack("10i", BATCH, w, h, 3, 6, CLASSES, *NET, seen, 0) + struct.pack("3i", 1, 2, 3)
        buf += struct.pack("12f", *layer.anchors[:12]) + struct.pack("6f", layer.ignore_thresh, layer.truth_thresh, 1, 1, 1, 1)
        return "detection_pj yolo", buf + raw.tobytes() + _darknet_truth(truth, 90, 5)
    assert isinstance(layer, Region)
    bits = int(layer.softmax) | int(layer.bias_match) << 1 | int(layer.rescore) << 2
    buf = struct.pack("10i", BATCH, w, h, 4, 4, CLASSES, *NET, seen, bits) + struct.pack("8f", *layer.anchors[:8])
    buf += struct.pack("6f", layer.thresh, 1, layer.coord_scale, layer.object_scale, layer.noobject_scale, layer.class_scale)
    return "detection_pj region", buf + raw.tobytes() + _darknet_truth(truth, 30, 5)


def _build(src: Path, exe: Path, lib: Path) -> None:
    subprocess.run(["gcc", f"-I{lib / 'include'}", f"-I{lib / 'src'}", "-O2", str(src), "-o", str(exe), f"-L{lib}", "-ldarknet",
                    "-lm", "-lpthread", f"-Wl,-rpath,{lib}"], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alexeyab", type=Path, required=True, help="AlexeyAB darknet source folder built with make LIBSO=1")
    ap.add_argument("--pjreddie", type=Path, required=True, help="pjreddie darknet source folder built with make")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, lib in (("yolo_ab", args.alexeyab), ("region_ab", args.alexeyab), ("detection_pj", args.pjreddie)):
            _build(HERE / "harness" / f"{name}.c", t / name, lib.resolve())
        store: dict[str, np.ndarray] = {}
        for i, case in enumerate(CASES):
            layer = build_layer(case)
            raw, truth = make_inputs(case, layer)
            prog, buf = _request(case, layer, raw, truth)
            (t / "in.bin").write_bytes(buf)
            exe, *rest = prog.split()
            subprocess.run([str(t / exe), str(t / "in.bin"), str(t / "out.bin"), *rest], check=True, capture_output=True)
            res = np.fromfile(t / "out.bin", np.float32)
            store[f"{i}_raw"], store[f"{i}_truth"] = raw, truth
            store[f"{i}_delta"] = res[: raw.size].reshape(raw.shape)
            store[f"{i}_tail"] = res[2 * raw.size :]  # cost, total_bbox, rewritten_bbox
        store["names"] = np.array([c.name for c in CASES])
        np.savez_compressed(NPZ, **store)
    print(f"wrote {NPZ} ({len(CASES)} cases)")


def load() -> dict[str, np.ndarray]:
    with np.load(NPZ) as z:
        return {k: z[k] for k in z.files}


def ours(case: Case, raw: np.ndarray, truth: np.ndarray):
    """cnnlab's LayerDelta for a stored case, from the layer's own forward on the raw input."""
    from cnnlab.darknet.yolo_loss import detection_deltas

    layer = build_layer(case)
    out = layer(torch.from_numpy(raw), [])
    return layer, out, detection_deltas([layer], [out], torch.from_numpy(truth), *NET, seen=case.seen)[0]


if __name__ == "__main__":
    main()
