"""CIFAR-10 / CIFAR-100 "python version" batches, read without unrestricted pickle.

* CIFAR-10 (``cifar-10-batches-py``): ``data_batch_1..5`` → "train", ``test_batch`` → "val",
  class names from ``batches.meta`` (``label_names``).
* CIFAR-100 (``cifar-100-python``): ``train`` → "train", ``test`` → "val", fine labels by default
  (``label="coarse"`` for the 20 super-classes), names from ``meta``.

The root may be the batches folder or its parent. The batches are pickles, and a pickle can run
any code it names; :class:`RestrictedUnpickler` only resolves the handful of numpy globals needed
to rebuild an array and refuses every other global with an error, before anything is called.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.sources.arrays import ArraySource
from cnnlab.errors import CnnlabError

FOLDERS = ("cifar-10-batches-py", "cifar-100-python")


def _numpy_attr(modules: tuple[str, ...], name: str) -> Any:
    import importlib

    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {name} in {modules}")


# numpy 2 moved numpy.core to numpy._core; pickles name whichever wrote them, so map both spellings
# to the object in this numpy without importing the deprecated alias.
_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes in protocol-2 pickles
}
for _m in _MULTIARRAY:
    _ALLOWED[(_m, "_reconstruct")] = _numpy_attr(_MULTIARRAY, "_reconstruct")
    _ALLOWED[(_m, "scalar")] = _numpy_attr(_MULTIARRAY, "scalar")
for _m in _NUMERIC:
    _ALLOWED[(_m, "_frombuffer")] = _numpy_attr(_NUMERIC, "_frombuffer")  # protocol-5 arrays


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals an array needs; anything else raises UnpicklingError."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def load_batch(path: Path) -> dict[str, Any]:
    """A CIFAR batch or meta file as a dict with ``str`` keys; CnnlabError if unsafe or malformed."""
    try:
        with open(path, "rb") as f:
            # latin1: the official files were written by Python 2; numpy needs it for its arrays.
            obj = RestrictedUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise CnnlabError(f"cannot read {path}: {e.strerror}") from None
    except pickle.UnpicklingError as e:
        raise CnnlabError(f"{path}: {e}; this is not a genuine CIFAR batch, do not use it") from None
    except Exception as e:  # noqa: BLE001 - any parse failure of a user file is a user error
        raise CnnlabError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e}); download it again") from None
    if not isinstance(obj, dict):
        raise CnnlabError(f"{path}: expected a dict, found {type(obj).__name__}; not a CIFAR batch")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _names(meta: dict[str, Any], key: str, path: Path) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, list) or not names:
        raise CnnlabError(f"{path}: no {key!r} list; not a CIFAR meta file")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def find_cifar_dir(root: Path) -> Path | None:
    """The batches folder: ``root`` itself or ``root/cifar-10-batches-py`` / ``root/cifar-100-python``."""
    for directory in (root, *(root / f for f in FOLDERS)):
        if (directory / "batches.meta").is_file() or ((directory / "meta").is_file() and (directory / "train").is_file()):
            return directory
    return None


def open_cifar(root: Path, split: str, label: str = "fine") -> ArraySource:
    """One split of CIFAR-10 or CIFAR-100 under ``root`` (see the module docstring)."""
    if split not in ("train", "val"):
        raise CnnlabError(f"unknown split {split!r}: use one of train, val")
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    directory = find_cifar_dir(Path(root))
    if directory is None:
        raise CnnlabError(f"no CIFAR batches in {root}: expected batches.meta (CIFAR-10) or meta + train (CIFAR-100)")
    if (directory / "batches.meta").is_file():  # CIFAR-10
        meta_path, label_key, names_key = directory / "batches.meta", "labels", "label_names"
        if split == "train":
            files = sorted(directory.glob("data_batch_*"), key=lambda p: (len(p.name), p.name))
        else:
            files = [directory / "test_batch"]
    else:  # CIFAR-100
        meta_path, label_key, names_key = directory / "meta", f"{label}_labels", f"{label}_label_names"
        files = [directory / ("train" if split == "train" else "test")]
    files = [f for f in files if f.is_file()]
    if not files:
        raise CnnlabError(f"{directory} has no batch file for split {split!r}: download the dataset again")
    classes = _names(load_batch(meta_path), names_key, meta_path)
    images, labels = [], []
    for path in files:
        batch = load_batch(path)
        data, batch_labels = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise CnnlabError(f"{path}: 'data' is not a uint8 N x 3072 array; not a CIFAR batch")
        if batch_labels is None or len(batch_labels) != len(data):
            raise CnnlabError(f"{path}: {label_key!r} missing or not one per image; not a CIFAR batch")
        batch_labels = np.asarray(batch_labels, dtype=np.int64)
        if len(batch_labels) and (batch_labels.min() < 0 or batch_labels.max() >= len(classes)):
            raise CnnlabError(f"{path}: labels outside 0..{len(classes) - 1} of {meta_path.name}; the files do not match")
        images.append(data.reshape(-1, 3, 32, 32))  # rows are R plane, G plane, B plane → (N, 3, 32, 32)
        labels.append(batch_labels)
    name = f"{directory.name}:{split}"  # describe() → "cifar-10-batches-py:val[123]"
    return ArraySource(np.concatenate(images), np.concatenate(labels), classes, name)
