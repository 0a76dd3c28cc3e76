"""MNIST-style idx files (MNIST, Fashion-MNIST, KMNIST, EMNIST), parsed with numpy.

Files: ``train-images-idx3-ubyte`` + ``train-labels-idx1-ubyte`` → "train";
``t10k-images-idx3-ubyte`` + ``t10k-labels-idx1-ubyte`` → "val". Each may be gzipped (detected
by content) and may use ``.`` instead of ``-`` before ``idx`` (both spellings circulate). They are
looked for in the given folder, its ``raw/`` and ``*/raw/`` (torchvision's download layout).

The idx header is ``0x00 0x00 <type> <ndim>`` then ``ndim`` big-endian uint32 sizes; only the
unsigned-byte type (0x08) occurs in these datasets. The magic, the number of dimensions and the
payload size are all checked, and so are the label count and range.

Class names are the digits ``"0".."9"`` (or ``"0".."K-1"`` if labels go higher), except that a
path containing "fashion" (case-insensitive) gets Fashion-MNIST's ten names.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from pathlib import Path

import numpy as np

from cnnlab.data.sources.arrays import ArraySource
from cnnlab.errors import CnnlabError

SPLIT_PREFIX = {"train": "train", "val": "t10k"}
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_UBYTE = 0x08


def _file(directory: Path, prefix: str, kind: str, ndim: int) -> Path | None:
    pattern = re.compile(rf"{prefix}-{kind}[-.]idx{ndim}-ubyte(\.gz)?")
    matches = sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name) and p.is_file())
    return matches[0] if matches else None


def find_idx_dir(root: Path) -> Path | None:
    """The folder holding the idx files: ``root``, ``root/raw`` or ``root/*/raw``; None if absent."""
    # Stat <sub>/raw rather than glob "*/raw": a glob would list every class folder of an ImageNet tree.
    subs = sorted(e.name for e in os.scandir(root) if e.is_dir()) if root.is_dir() else []
    candidates = [root, root / "raw", *(root / sub / "raw" for sub in subs)]
    for directory in candidates:
        if directory.is_dir() and any(_file(directory, p, "images", 3) for p in SPLIT_PREFIX.values()):
            return directory
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte idx file with ``ndim`` dimensions → uint8 array; CnnlabError if malformed."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CnnlabError(f"cannot read {path}: {e.strerror}") from None
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise CnnlabError(f"{path}: broken gzip data ({e}); download the file again") from None
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise CnnlabError(f"{path}: not an idx file (bad magic number); expected an MNIST-style idx file")
    dtype_code, dims = data[2], data[3]
    if dtype_code != _UBYTE:
        raise CnnlabError(f"{path}: idx data type 0x{dtype_code:02x} is not supported, only unsigned bytes (0x08)")
    if dims != ndim:
        raise CnnlabError(f"{path}: has {dims} dimensions, expected {ndim} (is it the images/labels file swapped?)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CnnlabError(f"{path}: truncated header; download the file again")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise CnnlabError(
            f"{path}: header says {'x'.join(map(str, shape))} = {expected} bytes but the file holds "
            f"{len(data) - header}; it is truncated or corrupt, download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def open_idx(root: Path, split: str) -> ArraySource:
    """One split of an idx dataset under ``root`` (see the module docstring)."""
    prefix = SPLIT_PREFIX.get(split)
    if prefix is None:
        raise CnnlabError(f"unknown split {split!r}: use one of {', '.join(SPLIT_PREFIX)}")
    directory = find_idx_dir(Path(root))
    if directory is None:
        raise CnnlabError(f"no idx files in {root}: expected train-images-idx3-ubyte and friends")
    images_path = _file(directory, prefix, "images", 3)
    labels_path = _file(directory, prefix, "labels", 1)
    for path, kind in ((images_path, "images-idx3"), (labels_path, "labels-idx1")):
        if path is None:
            raise CnnlabError(f"{directory} has no {prefix}-{kind}-ubyte[.gz] file for split {split!r}: add it")
    images = read_idx(images_path, 3)  # (N, H, W)
    labels = read_idx(labels_path, 1).astype(np.int64)  # (N,)
    if len(labels) != len(images):
        raise CnnlabError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}; the files do not match")
    top = int(labels.max()) if len(labels) else 0
    if "fashion" in str(directory.resolve()).lower() and top < len(FASHION_NAMES):
        classes = list(FASHION_NAMES)
    else:
        classes = [str(i) for i in range(max(10, top + 1))]
    return ArraySource(images[:, None], labels, classes, images_path.name)  # (N, 1, H, W)
