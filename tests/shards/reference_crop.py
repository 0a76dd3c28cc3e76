"""The crop rule in plain Python: what :mod:`cnnlab.data.shards.crop_draw` compiles, and random
boxes for the decoding tests."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def rrc_box(width: int, height: int, rng: "SampleRandom | random.Random", scale: Sequence[float], ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """``(left, top, w, h)`` of a random-resized crop (the rule of Szegedy et al. that torchvision uses)."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    # Fallback: the whole image, trimmed to the nearest allowed aspect ratio.
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class SampleRandom:
    """The few uniform draws of one sample's crop and flip, from its key: splitmix64 over a counter
    (``random.Random``'s interface; seeding a Mersenne Twister would cost 5 µs per sample)."""

    __slots__ = ("state",)
    _MASK = (1 << 64) - 1

    def __init__(self, seed: int) -> None:
        self.state = seed & self._MASK

    def random(self) -> float:
        """Uniform in [0, 1) with 53 random bits."""
        self.state = z = (self.state + 0x9E3779B97F4A7C15) & self._MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self._MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self._MASK
        return ((z ^ (z >> 31)) >> 11) * (1.0 / (1 << 53))

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def randint(self, a: int, b: int) -> int:
        """Uniform over ``a .. b`` inclusive (as :meth:`random.Random.randint`)."""
        return a + int(self.random() * (b - a + 1))
