"""A darknet detection ``.data`` file as a data set: ``train=`` / ``valid=`` image lists with YOLO labels
and ``names=``, so ``cnnlab train --task detect --data FILE.data`` reads what ``darknet detector train``
reads (labels by AlexeyAB's rule, beside the image)."""

from __future__ import annotations

from pathlib import Path

from cnnlab.darknet.cfg import read_data_file, resolve_data_path
from cnnlab.darknet.textfiles import read_lines
from cnnlab.data.sources.yolo_labels import YoloSource, open_yolo
from cnnlab.errors import CnnlabError


def is_detection_data(path: Path) -> bool:
    return path.is_file() and path.suffix == ".data"


def open_darknet_data(path: Path, split: str, flavor: str = "alexeyab") -> YoloSource:
    """The ``train=`` list for split "train", ``valid=`` (else ``train=``, as darknet) for "val"."""
    options = read_data_file(path)
    if "names" not in options:
        raise CnnlabError(f"{path} has no names= line: a detection .data file names its classes (names=FILE, one per line)")
    names_file = resolve_data_path(options["names"], path)
    try:
        names = [n.strip() for n in read_lines(names_file) if n.strip()]
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read the names list {str(names_file)!r} (from 'names='): {e.strerror}") from None
    key = "train" if split == "train" else ("valid" if "valid" in options else "train")
    if key not in options:
        raise CnnlabError(f"{path} has no {key}= line: give the image list of the {split} split")
    return open_yolo(resolve_data_path(options[key], path), names, flavor)
