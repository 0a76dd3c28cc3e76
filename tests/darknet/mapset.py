"""A tiny detection set for comparing ``detector map`` / ``calc_anchors`` with the real AlexeyAB darknet.

Everything but the labels is regenerated from seeds, so the stored reference (``reference/map/``) is
text only: the labels (``labels.txt``) and darknet's printouts. ``make_map_reference.py`` made them.

* ``map-tiny.cfg``: yolov3-tiny's shape at a quarter of the widths, 128×128 input, 3 classes.
  Weights by ``refweights.write_reference_weights`` (the oracle's deterministic recipe).
  ``map-tiny-lb.cfg`` is the same with ``letter_box=1`` (it uses the same weights file).
* 24 PNG images (lossless, so darknet's stb_image and PIL decode the same pixels) of four sizes:
  smooth gradients with a few filled rectangles and ellipses, numpy ``RandomState(2026)``.
* ``map.data`` (valid= and train= the 24 images), ``map-coco.data`` (eval=coco, for ``detector valid``) and ``map-difficult.data`` (adds ``difficult=``, a
  parallel list under ``hard/`` whose labels are the difficult truths).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .refweights import write_reference_weights

MAP_REF = Path(__file__).resolve().parent / "reference" / "map"  # labels.txt and darknet's printouts
N_IMAGES = 24
SIZES = [(160, 120), (128, 128), (200, 150), (96, 144)]
NAMES = ["red", "green", "blue"]

_CONV = "[convolutional]\nbatch_normalize=1\nfilters={f}\nsize={s}\nstride=1\npad=1\nactivation=leaky\n\n"
_HEAD = "[convolutional]\nsize=1\nstride=1\npad=1\nfilters=24\nactivation=linear\n\n"
_YOLO = ("[yolo]\nmask = {m}\nanchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319\nclasses=3\nnum=6\n"
         "jitter=.3\nignore_thresh = .7\ntruth_thresh = 1\nrandom=1\n\n")  # fmt: skip


def cfg_text() -> str:
    parts = ["[net]\nbatch=1\nsubdivisions=1\nwidth=128\nheight=128\nchannels=3\n\n"]
    for f in (4, 8, 16, 32, 64):
        parts += [_CONV.format(f=f, s=3), "[maxpool]\nsize=2\nstride=2\n\n"]
    parts += [_CONV.format(f=128, s=3), "[maxpool]\nsize=2\nstride=1\n\n", _CONV.format(f=256, s=3)]
    parts += [_CONV.format(f=64, s=1), _CONV.format(f=128, s=3), _HEAD, _YOLO.format(m="3,4,5")]
    parts += ["[route]\nlayers = -4\n\n", _CONV.format(f=32, s=1), "[upsample]\nstride=2\n\n", "[route]\nlayers = -1, 8\n\n"]
    parts += [_CONV.format(f=64, s=3), _HEAD, _YOLO.format(m="0,1,2")]
    return "".join(parts)


def _image(rs: np.random.RandomState, w: int, h: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = rs.uniform(0, 255, 3)[:, None, None] + rs.uniform(-1, 1, 3)[:, None, None] * xx + rs.uniform(-1, 1, 3)[:, None, None] * yy
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8).transpose(1, 2, 0), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(rs.randint(1, 4)):
        x0, y0 = rs.randint(0, w - 20), rs.randint(0, h - 20)
        box = [x0, y0, x0 + rs.randint(10, w // 2), y0 + rs.randint(10, h // 2)]
        colour = tuple(int(c) for c in rs.randint(0, 256, 3))
        (draw.rectangle if rs.rand() < 0.5 else draw.ellipse)(box, fill=colour)
    return im


def image_paths() -> list[str]:
    return [f"img/{i:03d}.png" for i in range(N_IMAGES)]


def build(root: Path, labels: dict[str, str] | None = None) -> Path:
    """Writes the set under ``root`` (images, cfg, weights, names, lists, .data; labels when given as
    {label path: text}); returns the weights path. Paths in the lists are relative to ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    rs = np.random.RandomState(2026)
    for i, p in enumerate(image_paths()):
        w, h = SIZES[i % len(SIZES)]
        _image(rs, w, h).save(root / p)
    (root / "map-tiny.cfg").write_text(cfg_text())
    weights = write_reference_weights(root / "map-tiny.cfg", root / "map-tiny.weights")
    # the same net with [net] letter_box=1 (darknet's map letterboxes then), and the same weights
    (root / "map-tiny-lb.cfg").write_text(cfg_text().replace("channels=3\n", "channels=3\nletter_box=1\n", 1))
    (root / "map.names").write_text("\n".join(NAMES) + "\n")
    (root / "valid.txt").write_text("\n".join(image_paths()) + "\n")
    (root / "hard.txt").write_text("\n".join(p.replace("img/", "hard/") for p in image_paths()) + "\n")
    (root / "map.data").write_text("classes=3\ntrain=valid.txt\nvalid=valid.txt\nnames=map.names\n")
    (root / "map-coco.data").write_text("classes=3\nvalid=valid.txt\nnames=map.names\neval=coco\n")
    (root / "map-difficult.data").write_text("classes=3\ntrain=valid.txt\nvalid=valid.txt\nnames=map.names\ndifficult=hard.txt\n")
    for rel, text in (labels or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return weights


def read_labels_file(path: Path) -> dict[str, str]:
    """``labels.txt``: a ``# PATH`` line before each label file's lines."""
    out: dict[str, str] = {}
    current = ""
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            current = line[2:]
            out[current] = ""
        else:
            out[current] += line + "\n"
    return out
