"""``--data`` for ``--task detect``: every source of boxes cnnlab reads, behind one opener.

- ``FILE.data`` — darknet's detection ``.data`` (``train=``/``valid=`` lists, YOLO labels, ``names=``);
- a PASCAL VOC folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/{train,val}.txt``); the
  class list is read from the train split's annotations so both splits number classes alike;
- ``shards:DIR`` — shards written with ``cnnlab data shards ... --boxes boxes.csv``.

Anything else opens as for classification, and the detection task then says it has no boxes.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.data.sources.base import ImageSource
from cnnlab.errors import CnnlabError


def is_voc_folder(root: Path) -> bool:
    return (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir()


def open_detection_split(spec: str, split: str, seed: int = 0, classes: list[str] | None = None) -> ImageSource:
    """The ``split`` ("train" or "val") of ``spec`` as a detection source (see the module docstring).
    ``classes``: how a VOC folder's class names are numbered (the train split's, or a trained model's);
    by default read from the train split's annotations."""
    from cnnlab.data.datasets import SPLITS, open_split

    if split not in SPLITS:
        raise CnnlabError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if spec.startswith("shards:"):
        from cnnlab.data.shards.source import open_shard_boxes

        return open_shard_boxes(spec[len("shards:") :], split)
    root = Path(spec).expanduser()
    if root.is_dir() and is_voc_folder(root):
        from cnnlab.data.sources.voc import open_voc

        # the val split may lack a class the train split has (or the reverse): number them from train
        if classes is None and split != "train":
            classes = open_voc(root, "train").classes
        return open_voc(root, split, classes)
    return open_split(spec, split, seed)
