"""Write ``tests/darknet/reference/box_truth.json``: darknet's own ``fill_truth_detection`` (data.c:
``correct_boxes`` + its drop rules) on seeded random label files and windows, for
``test_box_augment.py`` to compare cnnlab's box arithmetic with.

Needs darknet builds made from the mirrors outside the repository (never committed), e.g.::

    git -C AB_MIRROR archive HEAD | tar -x -C /tmp/dk-ab && make -C /tmp/dk-ab GPU=0 CUDNN=0 OPENCV=0 OPENMP=0 AVX=0 LIBSO=1
    git -C PJ_MIRROR archive HEAD | tar -x -C /tmp/dk-pj && make -C /tmp/dk-pj GPU=0 CUDNN=0 OPENCV=0 OPENMP=0

then, from the repository root::

    python tests/darknet/make_box_reference.py --alexeyab /tmp/dk-ab [--pjreddie /tmp/dk-pj]

Also, for the AlexeyAB build, the image path of its loader without OpenCV: ``crop_image``,
``resize_image``, ``flip_image``, ``distort_image`` on a PNG made by :func:`reference_image` —
the sha256 of darknet's float32 output where no HSV change is drawn (cnnlab's must be
bit-identical), darknet's values on a small output where one is.

A small C driver (written here, compiled against each build) reads one case per line — label
path, flip, dx, dy, sx, sy (as darknet's loaders compute them, float32), network size — and prints
the truth rows darknet fills. darknet shuffles the boxes (``randomize_boxes``), so rows are stored
sorted. Cases: up to 7 boxes, some half or wholly outside the image, some under one network pixel,
some at x = y = 0 (AlexeyAB only: pjreddie keeps such a box as a garbage row at 999999, which
cnnlab drops).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "reference" / "box_truth.json"
CASES = 60
DRIVER = r"""
#include <stdio.h>
%(decl)s
int main(void) {
    char path[4096]; int flip, nw, nh; float dx, dy, sx, sy;
    static float truth[200 * 6];
    while (scanf("%%4095s %%d %%f %%f %%f %%f %%d %%d", path, &flip, &dx, &dy, &sx, &sy, &nw, &nh) == 8) {
        for (int i = 0; i < 200 * 6; ++i) truth[i] = 0;
        %(call)s;
        fflush(stdout);
        printf("OUT:");
        for (int i = 0; i < 200; ++i) {
            float *t = truth + i * %(size)d;
            if (!t[0]) break;
            printf("%%.9g %%.9g %%.9g %%.9g %%.9g;", t[4], t[0], t[1], t[2], t[3]);
        }
        printf("\n");
    }
    return 0;
}
"""
FLAVORS = {
    "alexeyab": {
        "decl": "int fill_truth_detection(const char *, int, int, float *, int, int, float, float, float, float, int, int);",
        "call": "fill_truth_detection(path, 200, 6, truth, 1000, flip, dx, dy, sx, sy, nw, nh)",
        "size": 6,
    },
    "pjreddie": {
        "decl": "void fill_truth_detection(char *, int, float *, int, int, float, float, float, float);",
        "call": "fill_truth_detection(path, 200, truth, 1000, flip, dx, dy, sx, sy)",
        "size": 5,
    },
}


IMAGE_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
typedef struct { int w; int h; int c; float *data; } image;
image load_image_stb(char *filename, int channels);
image crop_image(image im, int dx, int dy, int w, int h);
image resize_image(image im, int w, int h);
void flip_image(image a);
void distort_image(image im, float hue, float sat, float val);
int main(int argc, char **argv) {
    char out[4096]; int pleft, ptop, sw, sh, w, h, flip; float dhue, dsat, dexp;
    image orig = load_image_stb(argv[1], 3);
    while (scanf("%d %d %d %d %d %d %d %f %f %f %4095s", &pleft, &ptop, &sw, &sh, &w, &h, &flip, &dhue, &dsat, &dexp, out) == 11) {
        image sized = resize_image(crop_image(orig, pleft, ptop, sw, sh), w, h);
        if (flip) flip_image(sized);
        if (dhue != 0 || dsat != 1 || dexp != 1) distort_image(sized, dhue, dsat, dexp);
        FILE *f = fopen(out, "wb");
        fwrite(sized.data, sizeof(float), sized.w * sized.h * sized.c, f);
        fclose(f);
    }
    return 0;
}
"""


def reference_image() -> np.ndarray:
    """A 70×45 RGB uint8 image (H, W, 3) from integer formulas (no RNG): gradients and a checker."""
    y, x = np.mgrid[0:45, 0:70]
    return np.stack([(x * 37 + y * 11) % 256, (y * 53 + (x // 7) * 40) % 256, ((x ^ y) * 9) % 256], -1).astype(np.uint8)


def image_cases(rng: np.random.Generator, build: Path, tmp: Path) -> list[dict]:
    from PIL import Image

    Image.fromarray(reference_image()).save(tmp / "ref.png")
    (tmp / "image.c").write_text(IMAGE_DRIVER)
    exe = tmp / "image-driver"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(tmp / "image.c"), f"-L{build}", "-ldarknet", f"-Wl,-rpath,{build}", "-lm", "-lpthread"], check=True)
    cases, lines = [], []
    for i in range(24):
        pleft, pright = (int(v) for v in rng.integers(-21, 22, 2))
        ptop, pbot = (int(v) for v in rng.integers(-13, 14, 2))
        hsv = i % 3 == 2
        w, h = (8, 6) if hsv else (int(rng.choice([32, 48, 64])), int(rng.choice([24, 32, 64])))
        draws = (float(np.float32(rng.uniform(-0.1, 0.1))), float(np.float32(rng.uniform(0.7, 1.5))), float(np.float32(rng.uniform(0.7, 1.5)))) if hsv else (0.0, 1.0, 1.0)
        case = {"window": [pleft, pright, ptop, pbot], "out": [w, h], "flip": int(rng.integers(2)), "hsv": list(draws)}
        cases.append(case)
        lines.append(f"{pleft} {ptop} {70 - pleft - pright} {45 - ptop - pbot} {w} {h} {case['flip']} {draws[0]!r} {draws[1]!r} {draws[2]!r} {tmp / f'out{i}.bin'}")
    subprocess.run([str(exe), str(tmp / "ref.png")], input="\n".join(lines) + "\n", text=True, check=True)
    for i, case in enumerate(cases):
        data = np.fromfile(tmp / f"out{i}.bin", np.float32)
        if case["hsv"] == [0.0, 1.0, 1.0]:
            case["sha256"] = hashlib.sha256(data.tobytes()).hexdigest()
        else:
            case["darknet"] = [float(f"{v:.8g}") for v in data]
    return cases


def make_cases(rng: np.random.Generator, flavor: str) -> list[dict]:
    cases = []
    for _ in range(CASES):
        n = int(rng.integers(0, 8))
        boxes = np.stack(
            [rng.integers(0, 5, n), rng.uniform(-0.1, 1.1, n), rng.uniform(-0.1, 1.1, n), rng.uniform(0.0005, 0.6, n), rng.uniform(0.0005, 0.6, n)], 1
        ).round(6)
        if n and flavor == "alexeyab" and rng.random() < 0.2:
            boxes[0, 1:3] = 0
        ow, oh = (int(v) for v in rng.integers(50, 800, 2))
        net = [int(v) for v in rng.choice([32, 64, 416], 2)]
        if flavor == "alexeyab":  # a window as load_data_detection draws it (jitter .3)
            window = [int(v) for v in (*rng.integers(-int(0.3 * ow), int(0.3 * ow) + 1, 2), *rng.integers(-int(0.3 * oh), int(0.3 * oh) + 1, 2))]
        else:  # a placement: nw, nh, dx, dy in network pixels
            nw, nh = (int(rng.integers(net[i] // 2, net[i] + 1)) for i in (0, 1))
            window = [nw, nh, int(rng.integers(0, net[0] - nw + 1)), int(rng.integers(0, net[1] - nh + 1))]
        cases.append({"boxes": boxes.tolist(), "ow": ow, "oh": oh, "net": net, "window": window, "flip": int(rng.integers(2))})
    return cases


def loader_args(case: dict, flavor: str) -> tuple[float, float, float, float]:
    """(dx, dy, sx, sy) as darknet's load_data_detection passes them, in float32."""
    f32 = np.float32
    if flavor == "alexeyab":
        pleft, pright, ptop, pbot = case["window"]
        sx = f32(case["ow"] - pleft - pright) / f32(case["ow"])
        sy = f32(case["oh"] - ptop - pbot) / f32(case["oh"])
        dx, dy = (f32(pleft) / f32(case["ow"])) / sx, (f32(ptop) / f32(case["oh"])) / sy
        return float(dx), float(dy), float(f32(1) / sx), float(f32(1) / sy)
    nw, nh, px, py = case["window"]
    w, h = case["net"]
    return float(-f32(px) / f32(w)), float(-f32(py) / f32(h)), float(f32(nw) / f32(w)), float(f32(nh) / f32(h))


def run(build: Path, flavor: str, cases: list[dict], tmp: Path) -> None:
    spec = FLAVORS[flavor]
    (tmp / "driver.c").write_text(DRIVER % spec)
    lib = "-ldarknet" if (build / "libdarknet.so").exists() else str(build / "libdarknet.a")
    exe = tmp / f"driver-{flavor}"
    cmd = ["gcc", "-O1", "-o", str(exe), str(tmp / "driver.c"), f"-L{build}", lib, f"-Wl,-rpath,{build}", "-lm", "-lpthread"]
    subprocess.run(cmd, check=True)
    lines = []
    for i, case in enumerate(cases):
        label = tmp / f"{flavor}{i}.txt"
        label.write_text("".join(f"{int(b[0])} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f} {b[4]:.6f}\n" for b in case["boxes"]))
        dx, dy, sx, sy = loader_args(case, flavor)
        lines.append(f"{label.with_suffix('.jpg')} {case['flip']} {dx:.9g} {dy:.9g} {sx:.9g} {sy:.9g} {case['net'][0]} {case['net'][1]}")
    out = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, cwd=tmp, check=True).stdout
    rows = [line[4:] for line in out.splitlines() if line.startswith("OUT:")]
    assert len(rows) == len(cases), (len(rows), len(cases))
    for case, row in zip(cases, rows):
        truth = [[float(v) for v in r.split()] for r in row.split(";") if r.strip()]
        case["darknet"] = sorted(truth)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alexeyab", type=Path, required=True, help="an AlexeyAB build folder (libdarknet.so)")
    ap.add_argument("--pjreddie", type=Path, help="a pjreddie build folder (libdarknet.a/.so)")
    args = ap.parse_args()
    rng = np.random.default_rng(14)
    result = {}
    with tempfile.TemporaryDirectory(prefix="boxref") as tmp:
        # pjreddie rewrites label paths by substring (images, JPEGImages, raw → labels)
        assert not any(word in tmp for word in ("images", "JPEGImages", "raw")), tmp
        for flavor, build in (("alexeyab", args.alexeyab), ("pjreddie", args.pjreddie)):
            if build is not None:
                cases = make_cases(rng, flavor)
                run(build, flavor, cases, Path(tmp))
                result[flavor] = cases
        result["alexeyab_images"] = image_cases(rng, args.alexeyab, Path(tmp))
    OUT.write_text(json.dumps(result, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}: " + ", ".join(f"{k} {len(v)} cases" for k, v in result.items()))


if __name__ == "__main__":
    main()
