"""YOLO ``.txt`` labels (one ``cls xc yc w h`` line per box, image fractions) for a darknet image list or a folder.

**Where each image's label file is**, by the darknet being followed (``flavor``):

* ``alexeyab`` (src/utils.c: replace_image_to_label): the image path with its extension
  (``.jpg .JPG .jpeg .JPEG .png .PNG .bmp .BMP .ppm .PPM .tiff .TIFF``, at the end only) changed to
  ``.txt`` — a label beside its image — after the dataset layouts it knows are mapped: the first
  ``/JPEGImages/`` → ``/labels/`` and ``/images/{train,val}{2014,2017}/`` →
  ``/labels/{train,val}{2014,2017}/`` (also with backslashes).
* ``pjreddie`` (src/data.c: fill_truth_detection, with src/utils.c: find_replace): in the path as
  written, the first ``images`` → ``labels``, then the first ``JPEGImages`` → ``labels``, the first
  ``raw`` → ``labels``, and the first ``.jpg``, ``.png``, ``.JPG``, ``.JPEG`` → ``.txt``. These
  are plain substring replacements anywhere in the path, exactly as that darknet makes them
  (``strawberry.jpg`` looks for ``stlabelsberry.txt``); the report of a missing label shows the
  path looked for, and says when the other rule would have found one.

**A missing label file** means an image without boxes (AlexeyAB's behaviour; pjreddie's darknet
stops), counted, with the rule and the path in the report. **A label file that cannot be read or
parsed** (not text, a line that is not five numbers, a class that is not a whole number) is a
:class:`BadImage` naming it and the line: skipped and reported (darknet silently stops reading the
file at such a line). Boxes are then cleaned by :func:`cnnlab.data.boxes.clean_yolo`.

**Image paths.** A list is read as darknet reads it (:func:`cnnlab.darknet.textfiles.read_lines`);
a relative path is opened relative to the working directory, as darknet does, or else relative to
the list's folder or its parent (where list-making scripts put them). The label rule applies to the
path string so found. A folder is listed recursively (hidden names skipped, sorted) for files with
the image extensions above.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cnnlab.darknet.cfg import resolve_data_path
from cnnlab.darknet.textfiles import read_lines
from cnnlab.data.boxes import clean_yolo
from cnnlab.data.images import decode_image
from cnnlab.data.sources.base import BadImage
from cnnlab.data.sources.detection import DetectionSource, ImageBoxes, no_boxes
from cnnlab.errors import CnnlabError

Flavor = Literal["alexeyab", "pjreddie"]
FLAVORS: tuple[str, ...] = ("alexeyab", "pjreddie")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tiff")  # AlexeyAB's, compared case-insensitively

_AB_LAYOUTS = (  # replace_image_to_label's substitutions, in its order (the first occurrence of each)
    ("/images/train2017/", "/labels/train2017/"), ("/images/val2017/", "/labels/val2017/"), ("/JPEGImages/", "/labels/"),
    ("\\images\\train2017\\", "\\labels\\train2017\\"), ("\\images\\val2017\\", "\\labels\\val2017\\"),
    ("\\images\\train2014\\", "\\labels\\train2014\\"), ("\\images\\val2014\\", "\\labels\\val2014\\"),
    ("/images/train2014/", "/labels/train2014/"), ("/images/val2014/", "/labels/val2014/"), ("\\JPEGImages\\", "\\labels\\"),
)
_AB_EXTS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm", ".PPM", ".tiff", ".TIFF")
_PJ_STEPS = (("images", "labels"), ("JPEGImages", "labels"), ("raw", "labels"),
             (".jpg", ".txt"), (".png", ".txt"), (".JPG", ".txt"), (".JPEG", ".txt"))  # fmt: skip

RULES = {
    "alexeyab": "AlexeyAB's rule: the .txt beside the image (/JPEGImages/ → /labels/ and COCO's /images/<split>/ → /labels/<split>/)",
    "pjreddie": "pjreddie's rule: the first 'images', 'JPEGImages' and 'raw' in the path → 'labels', .jpg/.png/.JPG/.JPEG → .txt",
}


def _replace_first(text: str, old: str, new: str) -> str:
    return text.replace(old, new, 1)  # find_replace: the first occurrence only


def label_path(image: str, flavor: Flavor) -> str:
    """The label file darknet ``flavor`` reads for ``image`` (a path string, as listed)."""
    if flavor == "pjreddie":
        for old, new in _PJ_STEPS:
            image = _replace_first(image, old, new)
        return image
    if flavor != "alexeyab":
        raise CnnlabError(f"unknown label flavor {flavor!r}: use one of {', '.join(FLAVORS)}")
    for old, new in _AB_LAYOUTS:
        image = _replace_first(image, old, new)
    image = image.strip(" \t")  # AlexeyAB trims the result (utils.c trim: spaces and tabs)
    for ext in _AB_EXTS:  # the extension only when it ends the path
        if image.endswith(ext):
            return image[: -len(ext)] + ".txt"
    return image


def _record(tokens: list[str]) -> list[float]:
    """One ``cls x y w h`` record: a whole class number and four numbers; ValueError otherwise."""
    if len(tokens) != 5:
        raise ValueError
    return [float(int(tokens[0])), *(float(t) for t in tokens[1:])]


def parse_labels(text: str, where: str) -> np.ndarray:
    """The rows ``(N, 5)`` of a label file's text; :class:`BadImage` naming ``where`` and the line."""
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            rows.append(_record(tokens))
        except ValueError:
            shown = line.strip()[:60]
            raise BadImage(f"{where}: line {lineno} is {shown!r}, not 'class x_center y_center width height' "
                           f"(a whole class number and four numbers): fix or delete the line") from None  # fmt: skip
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def darknet_records(data: bytes) -> tuple[np.ndarray, bool]:
    """A label file's bytes as darknet's ``read_boxes`` reads them (data.c: a fscanf loop over
    ``%d %f %f %f %f``, for ``detector map`` / ``calc_anchors``, whose figures must be darknet's): float32
    ``(N, 5)`` records in any line layout, up to the first that does not parse — where
    :func:`parse_labels` refuses the file — and whether the whole file parsed."""
    tokens = data.decode("utf-8", "replace").split()
    rows: list[list[float]] = []
    for k in range(0, len(tokens) - len(tokens) % 5, 5):
        try:
            rows.append(_record(tokens[k : k + 5]))
        except ValueError:
            return np.array(rows, np.float32).reshape(-1, 5), False
    return np.array(rows, np.float32).reshape(-1, 5), len(tokens) % 5 == 0


def read_label_file(path: str) -> np.ndarray | None:
    """Rows of the label file at ``path``; None when there is none; :class:`BadImage` if unreadable."""
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise BadImage(f"{path}: cannot read the label file ({e.strerror or e}): check it and its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadImage(f"{path}: the label file is not text: write 'class x_center y_center width height' lines") from None
    return parse_labels(text, path)


class YoloSource(DetectionSource):
    """Images (path strings, as darknet would open them) with YOLO label files found by ``flavor``."""

    def __init__(self, paths: list[str], classes: list[str], flavor: Flavor = "alexeyab") -> None:
        if flavor not in FLAVORS:
            raise CnnlabError(f"unknown label flavor {flavor!r}: use one of {', '.join(FLAVORS)}")
        self.paths, self.classes, self.flavor = list(paths), list(classes), flavor
        self.rule = RULES[flavor]
        super().__init__()

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        return decode_image(self.paths[index])

    def describe(self, index: int) -> str:
        return self.paths[index]

    def label_file(self, index: int) -> str:
        return label_path(self.paths[index], self.flavor)

    def read_boxes(self, index: int) -> ImageBoxes:
        image, path = self.paths[index], self.label_file(index)
        if not path.endswith(".txt"):
            return no_boxes(f"{image}: {self.flavor}'s rule does not turn its extension into .txt; rename it to .jpg or .png")
        rows = read_label_file(path)
        if rows is None:
            return no_boxes(f"{image}: no {path}{self._other_rule_hint(image)}")
        cleaned = clean_yolo(rows, len(self.classes))
        return ImageBoxes(cleaned.boxes, np.zeros(len(cleaned.boxes), dtype=bool), cleaned.fixes)

    def _other_rule_hint(self, image: str) -> str:
        other: Flavor = "pjreddie" if self.flavor == "alexeyab" else "alexeyab"
        path = label_path(image, other)
        return f" (but {path} exists: {other}'s rule finds it)" if path.endswith(".txt") and os.path.isfile(path) else ""


def _list_file(listing: Path) -> list[str]:
    try:
        lines = read_lines(listing, paths=True)
    except OSError as e:
        raise CnnlabError(f"cannot read image list {listing}: {e.strerror}") from None
    return [str(resolve_data_path(line, listing)) for line in lines]


def _image_folder(root: Path) -> list[str]:
    found: list[str] = []
    seen: set[str] = set()  # real paths of the folders walked: a linked folder is entered once (no loops)
    for folder, dirs, files in os.walk(root, followlinks=True):
        seen.add(os.path.realpath(folder))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(folder, d)) not in seen)
        found.extend(os.path.join(folder, f) for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)


def open_yolo(spec: str | Path, classes: list[str], flavor: Flavor = "alexeyab") -> YoloSource:
    """Images of a darknet list file (one path per line) or of a folder, with their YOLO labels."""
    root = Path(spec).expanduser()
    if not classes:
        raise CnnlabError("YOLO labels need the class names (a .names file, one per line) to check class numbers")
    if root.is_dir():
        paths = _image_folder(root)
        what = f"image folder {root}"
    elif root.is_file():
        paths = _list_file(root)
        what = f"image list {root}"
    else:
        raise CnnlabError(f"{spec} does not exist: give a darknet image list (one path per line) or a folder of images")
    if not paths:
        raise CnnlabError(f"no images in {what}: expected {', '.join(IMAGE_EXTENSIONS)} files" if root.is_dir()
                          else f"{what} is empty: write one image path per line")  # fmt: skip
    return YoloSource(paths, classes, flavor)

