"""Seeded, stratified hold-out splits that stay put.

Each sample has a stable key (its row number in a built-in array, its relative path in a folder).
Within each class the samples are ranked by a keyed hash of ``(seed, key)`` and the first
``round(fraction * n)`` go to validation (at least one when the class has two or more samples).

Why hand-written rather than ``sklearn.model_selection.train_test_split``: the split must be
exactly the same on every machine and library version (everybody's "mnist5k val" is the same
digits), per-class counts must be exact, and a file must keep its split when other files are added
to the folder. A keyed hash gives all three; a shuffled permutation gives none of the last.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def _rank(seed: int, key: str) -> bytes:
    # blake2b rather than hash(): Python's str hash is salted per process.
    return hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()


def stratified_holdout(
    labels: Sequence[int] | np.ndarray, keys: Sequence[str], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train_indices, val_indices)``; each class contributes ``round(fraction * n)``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    if len(keys) != len(labels):
        raise ValueError("one key per label")
    val: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = len(members)
        k = int(round(fraction * n))
        if n >= 2:
            k = min(max(k, 1), n - 1)  # keep at least one sample of the class on each side
        else:
            k = 0
        ranked = sorted(members.tolist(), key=lambda i: _rank(seed, keys[i]))
        val.extend(ranked[:k])
    val_idx = np.array(sorted(val), dtype=np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask).astype(np.int64), val_idx
