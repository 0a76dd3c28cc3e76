"""A generated detection set: solid shapes with exact boxes pasted on real photos, in darknet's layout.

No detection data ships offline, so tests, the demo and ``bench/detect.py`` make one: each image is
a random crop of a photo that ships inside scikit-image or scikit-learn, with one to three shapes
(disk, square, triangle) painted on it in a random colour. The box of a shape is the bounding box
of the pixels painted, so labels are exact. Shapes do not overlap.

The layout is what both darknets read: ``train/NNNNNN.jpg`` with its YOLO label ``NNNNNN.txt``
beside it (no ``images``/``JPEGImages`` in the path, so pjreddie's path rule finds the same file as
AlexeyAB's), ``train.txt``/``valid.txt`` lists of absolute paths, ``shapes.names`` and
``shapes.data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_writer

CLASSES = ["disk", "square", "triangle"]
# Colour photos of at least 300 px inside the pip packages (the background of every image).
_PHOTOS = {
    "skimage": ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg"],
    "sklearn.datasets": ["images/china.jpg", "images/flower.jpg"],
}


@dataclass(frozen=True)
class ShapesSpec:
    train: int = 400
    valid: int = 100
    size: int = 160  # images are size × size
    max_shapes: int = 3
    min_side: float = 0.15  # shape side as a fraction of the image side
    max_side: float = 0.45
    seed: int = 0


def background_photos() -> list[np.ndarray]:
    """The packaged photos as uint8 RGB arrays (a clear error when a package is missing)."""
    import importlib

    photos = []
    for package, names in _PHOTOS.items():
        try:
            root = Path(importlib.import_module(package).__file__).parent
        except ImportError:
            raise CnnlabError(f"the shapes set needs photos from {package.split('.')[0]}: pip install scikit-image scikit-learn") from None
        folder = root / "data" if package == "skimage" else root
        photos += [np.asarray(Image.open(folder / n).convert("RGB")) for n in names if (folder / n).exists()]
    if not photos:
        raise CnnlabError("no background photos found in scikit-image / scikit-learn; reinstall them")
    return photos


def _background(photos: list[np.ndarray], size: int, rng: np.random.Generator) -> Image.Image:
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)


def _draw(draw: ImageDraw.ImageDraw, cls: int, x0: int, y0: int, side: int, colour: tuple[int, int, int]) -> None:
    x1, y1 = x0 + side - 1, y0 + side - 1
    if CLASSES[cls] == "disk":
        draw.ellipse([x0, y0, x1, y1], fill=colour)
    elif CLASSES[cls] == "square":
        draw.rectangle([x0, y0, x1, y1], fill=colour)
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=colour)


def _place(taken: list[tuple[int, int, int, int]], size: int, side: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """A free spot for a square of ``side`` (None after a few tries)."""
    for _ in range(20):
        x, y = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
        if all(x + side <= a or a + s <= x or y + side <= b or b + s <= y for a, b, s, _ in taken):
            return x, y
    return None


def make_image(photos: list[np.ndarray], spec: ShapesSpec, rng: np.random.Generator) -> tuple[Image.Image, list[tuple[int, float, float, float, float]]]:
    """One image and its YOLO boxes (cls, xc, yc, w, h relative): the painted pixels' bounding boxes."""
    img = _background(photos, spec.size, rng)
    taken: list[tuple[int, int, int, int]] = []
    boxes = []
    for _ in range(int(rng.integers(1, spec.max_shapes + 1))):
        side = int(rng.integers(int(spec.min_side * spec.size), int(spec.max_side * spec.size) + 1))
        spot = _place(taken, spec.size, side, rng)
        if spot is None:
            continue
        cls = int(rng.integers(len(CLASSES)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        mask = Image.new("L", img.size, 0)
        _draw(ImageDraw.Draw(mask), cls, *spot, side, 255)
        img.paste(Image.new("RGB", img.size, colour), mask=mask)
        left, top, right, bottom = mask.getbbox()
        taken.append((*spot, side, cls))
        s = spec.size
        boxes.append((cls, (left + right) / 2 / s, (top + bottom) / 2 / s, (right - left) / s, (bottom - top) / s))
    return img, boxes


def _write_text(path: Path, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text.encode())


def _write_split(out: Path, split: str, count: int, photos: list[np.ndarray], spec: ShapesSpec, rng: np.random.Generator) -> list[str]:
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        img, boxes = make_image(photos, spec, rng)
        path = folder / f"{i:06d}.jpg"
        with atomic_writer(path) as f:
            img.save(f, "JPEG", quality=95)
        _write_text(path.with_suffix(".txt"), "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes))
        paths.append(str(path.resolve()))
    return paths


def make_shapes(out: str | Path, spec: ShapesSpec = ShapesSpec(), force: bool = False) -> Path:
    """Write the set into ``out`` (refused when it holds files, unless ``force``); returns the .data file."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise CnnlabError(f"{out} is not empty; choose a new folder or pass --force to write over it")
    out.mkdir(parents=True, exist_ok=True)
    photos = background_photos()
    rng = np.random.default_rng(spec.seed)
    for split, count in (("train", spec.train), ("valid", spec.valid)):
        paths = _write_split(out, split, count, photos, spec, rng)
        _write_text(out / f"{split}.txt", "".join(p + "\n" for p in paths))
    _write_text(out / "shapes.names", "".join(c + "\n" for c in CLASSES))
    data = out / "shapes.data"
    root = os.fspath(out.resolve())
    _write_text(data, f"classes={len(CLASSES)}\ntrain={root}/train.txt\nvalid={root}/valid.txt\nnames={root}/shapes.names\nbackup={root}/backup/\n")
    (out / "backup").mkdir(exist_ok=True)  # darknet's trainers write there and refuse a missing folder
    return data
