"""Open a detection split by spec, like :func:`cnnlab.data.datasets.open_split` for classification.

=========================  ============================================================================
spec                       source
=========================  ============================================================================
``PATH.data``              a darknet ``.data`` file: ``train=`` / ``valid=`` image lists with YOLO
                           ``.txt`` labels, classes from ``names=`` (:func:`.yolo_labels.open_darknet_data`)
``yolo:LIST_OR_FOLDER``    a darknet image list or an image folder with YOLO labels; needs ``names``
``voc:DIR``                a PASCAL VOC folder (``Annotations``, ``JPEGImages``, ``ImageSets/Main``)
``shards:DIR``             shards written by ``cnnlab data shards --boxes``
=========================  ============================================================================

``flavor`` (``alexeyab`` or ``pjreddie``) chooses where YOLO label files are looked for. The
ImageNet bbox CSV joined with an image folder is :func:`.sources.bbox_csv.open_bbox_csv`.
"""

from __future__ import annotations

from cnnlab.data.shards.source import open_shard_boxes
from cnnlab.data.sources.detection import DetectionSource
from cnnlab.data.sources.voc import open_voc
from cnnlab.data.sources.yolo_labels import Flavor, open_darknet_data, open_yolo
from cnnlab.errors import CnnlabError

SPLITS = ("train", "val")
FORMS = "PATH.data, yolo:LIST_OR_FOLDER, voc:DIR or shards:DIR"


def open_detection(spec: str, split: str, names: list[str] | None = None, flavor: Flavor = "alexeyab") -> DetectionSource:
    """The ``split`` ("train" or "val") of the detection data ``spec`` (see the module docstring)."""
    if split not in SPLITS:
        raise CnnlabError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    kind, sep, rest = spec.partition(":")
    if sep and kind == "yolo":
        if not names:
            raise CnnlabError(f"{spec}: YOLO labels need the class names: give a names file (one name per line)")
        return open_yolo(rest, names, flavor)
    if sep and kind == "voc":
        return open_voc(rest, split, names)
    if sep and kind == "shards":
        return open_shard_boxes(rest, split)
    if spec.endswith(".data"):
        return open_darknet_data(spec, split, flavor)
    raise CnnlabError(f"{spec!r} is not detection data: give {FORMS}")
