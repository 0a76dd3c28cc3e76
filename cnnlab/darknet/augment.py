"""darknet's classifier training augmentation (``load_data_augment``), seeded per sample.

Per image, as darknet: a geometric crop, a random horizontal flip, then ``random_distort_image``.

* crop: the short side goes to a random ``r`` in ``[min_crop, max_crop]`` and a ``width×height``
  window is taken at a random place. With ``angle=`` or ``aspect=`` set this is darknet's
  ``random_augment_image``: a rotation by a uniform angle in ±angle degrees and a width stretch by
  ``rand_scale(aspect)``, sampled bilinearly (zeros outside the image). pjreddie's ``center=1``
  takes the centre square instead. AlexeyAB crops a ``max(w, h)`` square that never leaves the
  image and resizes it to ``w×h``.
* distort: in HSV, S×``rand_scale(saturation)``, V×``rand_scale(exposure)``, H+uniform(±hue)
  (wrapped), back to RGB and clipped to [0, 1]. ``rand_scale(s)`` is uniform in [1, s], inverted
  with probability 1/2.

Every draw comes from ``np.random.default_rng([seed, sample])``, so a sample's augmentation depends
only on its index in the run (a resumed run repeats it). Options left at darknet's defaults
(angle=0, aspect=1, hue=0, saturation=1, exposure=1, center=0) draw nothing, so enabling none of them
keeps the stream of the plain crop + flip bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from cnnlab.darknet.cfg import Section
from cnnlab.darknet.preprocess import resize

# AlexeyAB [net] options for classifier training that cnnlab does not implement (warned about once)
UNSUPPORTED = ("mixup", "blur", "label_smooth_eps", "contrastive")


def uniform(rng: np.random.Generator, a: float, b: float) -> float:
    """darknet ``rand_uniform``: uniform between a and b in either order."""
    return float(rng.uniform(min(a, b), max(a, b)))


def rand_scale(rng: np.random.Generator, s: float) -> float:
    """darknet ``rand_scale``: uniform between 1 and s, inverted half of the time."""
    scale = uniform(rng, 1.0, s)
    return scale if rng.random() < 0.5 else 1.0 / scale


def rotate_crop(im: np.ndarray, rad: float, s: float, w: int, h: int, dx: float, dy: float, aspect: float) -> np.ndarray:
    """darknet ``rotate_crop_image``: output pixel (x, y) samples the source, bilinearly, at the
    centre-relative point ((x - w/2 + dx)·aspect/s, (y - h/2 + dy)/s) rotated by ``rad``; outside is 0."""
    c, H, W = im.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xs - w / 2 + dx) * aspect / s
    v = (ys - h / 2 + dy) / s
    rx = math.cos(rad) * u - math.sin(rad) * v + W / 2
    ry = math.sin(rad) * u + math.cos(rad) * v + H / 2
    x0, y0 = np.floor(rx), np.floor(ry)
    fx, fy = (rx - x0)[None], (ry - y0)[None]
    padded = np.pad(im, ((0, 0), (1, 1), (1, 1)))  # one ring of zeros: darknet's get_pixel_extend
    # index -1 and W (H) land on the zero ring; anything further out is clipped onto it
    xi = np.clip(x0.astype(np.int64), -1, W) + 1
    yi = np.clip(y0.astype(np.int64), -1, H) + 1
    xj = np.clip(x0.astype(np.int64) + 1, -1, W) + 1
    yj = np.clip(y0.astype(np.int64) + 1, -1, H) + 1
    out = (1 - fy) * ((1 - fx) * padded[:, yi, xi] + fx * padded[:, yi, xj]) + fy * ((1 - fx) * padded[:, yj, xi] + fx * padded[:, yj, xj])
    return out.astype(np.float32)


def rgb_to_hsv(im: np.ndarray) -> np.ndarray:
    """darknet ``rgb_to_hsv`` on (3, H, W): hue in [0, 1); grey pixels get hue 0, saturation 0."""
    r, g, b = im
    v = im.max(0)
    delta = v - im.min(0)
    safe = np.where(delta > 0, delta, 1)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1), 0)
    hue = np.where(r == v, (g - b) / safe, np.where(g == v, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = np.where(delta > 0, hue, 0)
    hue = np.where(hue < 0, hue + 6, hue) / 6
    return np.stack([hue, s, v]).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """darknet ``hsv_to_rgb``: sector floor(6h); a sector of 6 or more (h == 1) falls in darknet's last case."""
    hue, s, v = hsv
    h6 = hue * 6
    i = np.floor(h6)
    f = h6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sectors = [i == k for k in range(5)]
    r = np.select(sectors, [v, q, p, p, t], v)
    g = np.select(sectors, [t, v, v, q, p], p)
    b = np.select(sectors, [p, p, t, v, v], q)
    rgb = np.stack([r, g, b])
    return np.where(s == 0, v[None], rgb).astype(np.float32)


def distort(im: np.ndarray, dhue: float, dsat: float, dexp: float) -> np.ndarray:
    """darknet ``distort_image``: scale S and V, shift H (wrapped into [0, 1]), back to RGB, clip."""
    if im.shape[0] != 3:  # AlexeyAB: no HSV without three channels, only the exposure
        return np.clip(im * np.float32(dexp), 0, 1)
    hsv = rgb_to_hsv(im)
    hsv[1] *= dsat
    hsv[2] *= dexp
    h = hsv[0] + dhue
    hsv[0] = np.where(h > 1, h - 1, np.where(h < 0, h + 1, h))
    return np.clip(hsv_to_rgb(hsv), 0, 1)


class Augment:
    """The augmentation of sample ``k`` of a run, from the cfg's [net] options and the flavor."""

    def __init__(self, net: Section, width: int, height: int, seed: int, flavor: str = "pjreddie") -> None:
        self.w, self.h = width, height
        self.min = net.int("min_crop", width)
        self.max = max(self.min, net.int("max_crop", width * 2))
        self.flip = bool(net.int("flip", 1))
        self.angle = net.float("angle", 0.0)
        self.aspect = net.float("aspect", 1.0)
        self.hue = net.float("hue", 0.0)
        self.saturation = net.float("saturation", 1.0)
        self.exposure = net.float("exposure", 1.0)
        self.center = flavor == "pjreddie" and bool(net.int("center", 0))  # AlexeyAB's loader has no centre crop
        self.flavor = flavor
        self.seed = seed
        self.unsupported = [k for k in UNSUPPORTED if net.has(k) and net.float(k, 0.0) != 0]

    def __call__(self, im: np.ndarray, sample: int) -> np.ndarray:  # (3, H, W) float32 → (3, h, w)
        rng = np.random.default_rng([self.seed, sample])
        if self.center:
            out = self._center(im)
        elif self.angle != 0 or self.aspect != 1:
            out = self._rotate_crop(im, rng)
        else:
            out = self._crop(im, rng)
        if self.flip and rng.random() < 0.5:
            out = out[:, :, ::-1]
        if self.hue != 0 or self.saturation != 1 or self.exposure != 1:
            dhue = uniform(rng, -self.hue, self.hue)
            out = distort(out, dhue, rand_scale(rng, self.saturation), rand_scale(rng, self.exposure))
        return np.ascontiguousarray(out)

    def _crop(self, im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Short side to a random size in [min, max] (darknet's resize), then a random w×h window."""
        size = int(rng.integers(self.min, self.max + 1))
        _, H, W = im.shape
        nw, nh = (size, H * size // W) if W < H else (W * size // H, size)
        r = resize(im, max(nw, self.w), max(nh, self.h))  # never smaller than the crop
        y = int(rng.integers(0, r.shape[1] - self.h + 1))
        x = int(rng.integers(0, r.shape[2] - self.w + 1))
        return r[:, y : y + self.h, x : x + self.w]

    def _rotate_crop(self, im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """darknet ``random_augment_image`` (draw order as darknet: aspect, size, angle, dx, dy)."""
        _, H, W = im.shape
        aspect = rand_scale(rng, self.aspect)
        r = int(rng.integers(self.min, self.max + 1))
        short = int(min(H, W * aspect))  # darknet stores it in an int
        scale = r / max(short, 1)
        rad = uniform(rng, -self.angle, self.angle) * math.pi / 180
        if self.flavor == "pjreddie":
            # pjreddie centres the vertical range with the width too (identical for square nets) and lets
            # the window leave the image (black border) when r is below the net size
            dx = (W * scale / aspect - self.w) / 2
            dy = (H * scale - self.w) / 2
            return rotate_crop(im, rad, scale, self.w, self.h, uniform(rng, -dx, dx), uniform(rng, -dy, dy), aspect)
        size = max(self.w, self.h)  # AlexeyAB: a square that stays inside, resized to the net
        dx = max(0.0, (W * scale / aspect - size) / 2)
        dy = max(0.0, (H * scale - size) / 2)
        crop = rotate_crop(im, rad, scale, size, size, uniform(rng, -dx, dx), uniform(rng, -dy, dy), aspect)
        return crop if (self.w, self.h) == (size, size) else resize(crop, self.w, self.h)

    def _center(self, im: np.ndarray) -> np.ndarray:
        """pjreddie ``center_crop_image``: the centred square of the short side, resized to w×h."""
        _, H, W = im.shape
        m = min(H, W)
        y, x = (H - m) // 2, (W - m) // 2
        return resize(im[:, y : y + m, x : x + m], self.w, self.h)
