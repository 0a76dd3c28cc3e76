"""PASCAL VOC: ``ROOT/Annotations/<id>.xml`` + ``ROOT/JPEGImages/<id>.jpg``, one split.

* **Images of a split**: the ids of ``ROOT/ImageSets/Main/<split>.txt`` when that folder exists
  (``train``, ``val``, ``trainval``, ``test``; a missing split file is an error listing those there),
  else every ``Annotations/*.xml``, sorted. The image is ``JPEGImages/<id>.jpg`` (as ``voc_label.py``
  lists it).
* **Classes**: the names given (an object with another name is dropped and counted), or else the
  sorted set of object names in the split's XMLs (so give them for a val split, to number classes
  as train does).
* **Boxes**: VOC corners are 1-based pixels; they map to image fractions as darknet's
  ``scripts/voc_label.py`` does (centre ``(xmin + xmax) / 2 - 1``, width ``xmax - xmin``, over the
  ``<size>`` of the XML, else the image's header), then :func:`cnnlab.data.boxes.clean_corners`.
* ``difficult`` is kept per box (``DetectionSource.difficult``): training may use or skip them, mAP
  ignores them as VOC's devkit does.
* An XML that cannot be read or parsed makes its image a :class:`BadImage` naming the XML.

XML is parsed with ``defusedxml`` when it is installed, else with ``xml.etree`` (whose expat
refuses the entity-expansion attacks that matter here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

try:
    from defusedxml.ElementTree import ParseError, fromstring
except ImportError:  # not a dependency
    from xml.etree.ElementTree import ParseError, fromstring

from cnnlab.data.boxes import clean_corners
from cnnlab.data.images import decode_image, image_size_and_format
from cnnlab.data.sources.base import BadImage
from cnnlab.data.sources.detection import DetectionSource, ImageBoxes
from cnnlab.errors import CnnlabError


@dataclass
class VocObjects:
    """The objects of one XML, as written (names, 1-based corners)."""

    names: list[str]
    corners: np.ndarray  # (N, 4) float64 xmin, ymin, xmax, ymax
    difficult: np.ndarray  # (N,) bool
    size: tuple[int, int] | None  # width, height from <size>, if given


def _number(obj, key: str, xml: Path) -> float:
    text = obj.findtext(key)
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadImage(f"{xml}: <{key}> of an object is {text!r}, not a number: fix the annotation") from None


def parse_voc(xml: Path) -> VocObjects:
    """One annotation file; :class:`BadImage` naming it when it cannot be read or is not VOC XML."""
    try:
        root = fromstring(xml.read_bytes())
    except OSError as e:
        raise BadImage(f"{xml}: cannot read the annotation ({e.strerror or e})") from None
    except ParseError as e:
        raise BadImage(f"{xml}: not valid XML ({e}): fix or delete the annotation") from None
    names, corners, difficult = [], [], []
    for obj in root.iter("object"):
        names.append((obj.findtext("name") or "").strip())
        box = obj.find("bndbox")
        if box is None:
            raise BadImage(f"{xml}: an object ({names[-1]!r}) has no <bndbox>: fix the annotation")
        corners.append([_number(box, k, xml) for k in ("xmin", "ymin", "xmax", "ymax")])
        difficult.append((obj.findtext("difficult") or "0").strip() not in ("0", ""))
    try:
        size = (int(root.findtext("size/width") or 0), int(root.findtext("size/height") or 0))
    except ValueError:
        size = (0, 0)
    return VocObjects(names, np.asarray(corners, dtype=np.float64).reshape(-1, 4), np.asarray(difficult, dtype=bool),
                      size if min(size) > 0 else None)  # fmt: skip


class VocSource(DetectionSource):
    """Images of one VOC split; each sample's XML is parsed when opening (classes) or on first use."""

    def __init__(self, root: Path, ids: list[str], classes: list[str], parsed: dict[int, VocObjects | str] | None = None) -> None:
        self.root, self.ids, self.classes = Path(root), list(ids), list(classes)
        self._index = {name: i for i, name in enumerate(self.classes)}
        self._parsed = parsed or {}
        super().__init__()

    def __len__(self) -> int:
        return len(self.ids)

    def xml(self, index: int) -> Path:
        return self.root / "Annotations" / f"{self.ids[index]}.xml"

    def _objects(self, index: int) -> VocObjects:
        found = self._parsed.get(index)  # parsed when opening (to collect the classes)
        if found is None:
            return parse_voc(self.xml(index))
        if isinstance(found, str):
            raise BadImage(found)
        return found

    def image_path(self, index: int) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[index]}.jpg"

    def load(self, index: int) -> torch.Tensor:
        return decode_image(self.image_path(index))

    def describe(self, index: int) -> str:
        return str(self.image_path(index))

    def read_boxes(self, index: int) -> ImageBoxes:
        objects = self._objects(index)
        size = objects.size
        if size is None:  # no <size>: the image's header says
            try:
                w, h, _ = image_size_and_format(self.image_path(index))
            except (BadImage, OSError) as e:
                raise BadImage(f"{self.xml(index)}: no <size>, and the image's size cannot be read ({e})") from None
            size = (w, h)
        cls = [self._index.get(name, -1) for name in objects.names]
        # voc_label.py: centre − 1 and width xmax − xmin, i.e. both corners − 1 (1-based → 0-based)
        cleaned = clean_corners(cls, objects.corners - 1.0, len(self.classes), width=size[0], height=size[1])
        return ImageBoxes(cleaned.boxes, objects.difficult[cleaned.keep], cleaned.fixes)


def _split_ids(root: Path, split: str) -> list[str]:
    sets = root / "ImageSets" / "Main"
    if sets.is_dir():
        listing = sets / f"{split}.txt"
        if not listing.is_file():
            have = sorted(p.stem for p in sets.glob("*.txt") if "_" not in p.stem)
            raise CnnlabError(f"no {listing}: this VOC folder has the splits {', '.join(have) or '(none)'}; pick one of them")
        return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    return sorted(p.stem for p in (root / "Annotations").glob("*.xml") if not p.name.startswith("."))


def open_voc(root: str | Path, split: str, classes: list[str] | None = None) -> VocSource:
    """One split of a PASCAL VOC folder (``VOCdevkit/VOC2007`` and the like)."""
    root = Path(root).expanduser()
    if not (root / "Annotations").is_dir():
        raise CnnlabError(f"{root} is not a PASCAL VOC folder: expected {root / 'Annotations'}/*.xml and {root / 'JPEGImages'}/")
    ids = _split_ids(root, split)
    if not ids:
        raise CnnlabError(f"no images in split {split!r} of {root}")
    if classes:
        return VocSource(root, ids, classes)
    parsed: dict[int, VocObjects | str] = {}
    names: set[str] = set()
    for i, image_id in enumerate(ids):
        try:
            parsed[i] = parse_voc(root / "Annotations" / f"{image_id}.xml")
            names.update(parsed[i].names)
        except BadImage as e:
            parsed[i] = str(e)
    names.discard("")
    if not names:
        raise CnnlabError(f"no objects in the annotations of split {split!r} of {root}: give the class names")
    return VocSource(root, ids, sorted(names), parsed)
