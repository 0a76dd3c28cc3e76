"""One sample's random-resized crop and flip, drawn from its key in one compiled call.

The rule is torchvision's ``RandomResizedCrop`` (Szegedy et al.: area and log-aspect uniform, ten
tries, then the whole image trimmed to the allowed aspect); the draws are splitmix64 over a counter
seeded by the sample's key, so a crop depends on ``(seed, epoch, index)`` only (not on the worker
or the order). ``tests/shards/reference_crop.py`` writes the same in plain Python, and
``tests/shards/test_crop_draw.py`` checks the two agree bit for bit. In Python the ~6 draws and
the arithmetic cost 10-15 µs per sample, 3 % of a shard sample; compiled with numba, under a
microsecond. ``round`` is Python's (half to even: ``np.rint``); ``exp``, ``log`` and ``sqrt`` are
the C library's, as in :mod:`math`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / (1 << 53)


@numba.njit(cache=True, nogil=True)
def _uniform(state: np.uint64) -> tuple[np.uint64, float]:
    """The next state and a uniform number in [0, 1) with 53 random bits (SampleRandom.random)."""
    state = state + _GOLDEN
    z = (state ^ (state >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return state, np.float64((z ^ (z >> np.uint64(31))) >> np.uint64(11)) * _TO_UNIT


@numba.njit(cache=True, nogil=True)
def _draw(seed: int, width: int, height: int, scale_lo: float, scale_hi: float, ratio_lo: float, ratio_hi: float,
          hflip: float) -> tuple[int, int, int, int, bool]:  # fmt: skip
    state = np.uint64(seed)
    area = width * height
    log_lo, log_hi = math.log(ratio_lo), math.log(ratio_hi)
    for _ in range(10):
        state, r = _uniform(state)
        target = area * (scale_lo + (scale_hi - scale_lo) * r)
        state, r = _uniform(state)
        aspect = math.exp(log_lo + (log_hi - log_lo) * r)
        w, h = int(np.rint(math.sqrt(target * aspect))), int(np.rint(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            state, r = _uniform(state)
            x = int(r * (width - w + 1))
            state, r = _uniform(state)
            y = int(r * (height - h + 1))
            state, r = _uniform(state)
            return x, y, w, h, r < hflip
    # Fallback: the whole image, trimmed to the nearest allowed aspect ratio.
    w, h = width, height
    if width / height < ratio_lo:
        h = int(np.rint(width / ratio_lo))
    elif width / height > ratio_hi:
        w = int(np.rint(height * ratio_hi))
    state, r = _uniform(state)
    return (width - w) // 2, (height - h) // 2, w, h, r < hflip


def draw_crop(seed: int, width: int, height: int, scale: Sequence[float], ratio: Sequence[float], hflip: float) -> tuple[tuple[int, int, int, int], bool]:
    """``((left, top, w, h), flip)`` for the sample whose key mixes to ``seed`` (:func:`~cnnlab.data.loader.sample_seed`)."""
    x, y, w, h, flip = _draw(seed, width, height, scale[0], scale[1], ratio[0], ratio[1], hflip)
    return (x, y, w, h), flip


def compile_now() -> None:
    """Compile the draw (or load it from numba's cache) before DataLoader workers fork."""
    draw_crop(0, 1, 1, (1.0, 1.0), (1.0, 1.0), 0.5)
