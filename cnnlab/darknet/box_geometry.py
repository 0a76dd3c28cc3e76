"""The geometry of darknet's detector augmentation: where the window falls, the pixels it yields,
and the boxes that follow them (data.c ``load_data_detection``, ``correct_boxes``,
``fill_truth_detection``).

Two darknets, two geometries:

* AlexeyAB: a window ``(pleft, ptop, swidth, sheight)`` on the source image — each side moved
  by up to ``jitter`` of the image size (and ``[yolo] resize=``'s zoom), negative values meaning
  padding — is cut out and stretched to the network size. ``letter_box=1`` widens the window to
  the network's aspect. The OpenCV build fills what lies outside the image with its mean colour
  and resizes like ``cv::resize`` (:func:`crop_resize`); the build without OpenCV repeats the edge
  pixels and uses darknet's ``resize_image`` (:func:`crop_resize_plain`).
* pjreddie: the whole image, its aspect ratio jittered, is scaled to fit the network and placed
  at a random spot of a grey (0.5) canvas (``place_image``).

Images here are (3, H, W): uint8 tensors in, float32 in [0, 1] out. Boxes are (N, 5) float32
``[cls, xc, yc, w, h]`` relative to the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.darknet.augment import uniform
from cnnlab.darknet.preprocess import resize

PJREDDIE_MIN_SIDE = 0.001  # pjreddie fill_truth_detection drops boxes under this (relative) size


@dataclass(frozen=True)
class Crop:
    """AlexeyAB's window on an ``ow × oh`` source, in source pixels: ``pleft`` columns cut off on
    the left (negative: that much padding), ``pright`` on the right, ``ptop``/``pbot`` likewise."""

    pleft: int
    pright: int
    ptop: int
    pbot: int
    ow: int
    oh: int

    @property
    def swidth(self) -> int:
        return self.ow - self.pleft - self.pright

    @property
    def sheight(self) -> int:
        return self.oh - self.ptop - self.pbot

    def checked(self) -> Crop:
        """darknet's "invalid resize" reset: a window with no width or height becomes the image."""
        if self.swidth <= 0 or self.sheight <= 0 or self.ow - self.pleft <= 0 or self.oh - self.ptop <= 0:
            return Crop(0, 0, 0, 0, self.ow, self.oh)
        return self


def _precalc(lo: float, hi: float, r: float) -> float:
    """darknet ``rand_precalc_random``: ``r`` in [0, 1) mapped onto [lo, hi] (either order)."""
    lo, hi = min(lo, hi), max(lo, hi)
    return r * (hi - lo) + lo


def draw_crop(rng: np.random.Generator, ow: int, oh: int, net_w: int, net_h: int, jitter: float, resize: float, letter_box: bool) -> Crop:
    """AlexeyAB's window for one image. Draw order as darknet: the two zoom draws, then the four
    sides. C's ``int += float`` truncates the sum toward zero, and so does ``int()`` here."""
    dw, dh = int(ow * jitter), int(oh * jitter)
    down = 1 / resize if resize > 1 else resize  # the zoom range [1/resize, resize] as two factors
    up = 1 / resize if resize < 1 else resize
    min_rdw, min_rdh = int(ow * (1 - 1 / down) / 2), int(oh * (1 - 1 / down) / 2)  # <= 0: zoom out
    max_rdw, max_rdh = int(ow * (1 - 1 / up) / 2), int(oh * (1 - 1 / up) / 2)  # >= 0: zoom in
    if resize < 1:  # darknet: "downsize only"
        max_rdw = max_rdh = 0
    zr1, zr2 = rng.random(), rng.random()
    r1, r2, r3, r4 = rng.random(4)
    pleft = int(int(_precalc(-dw, dw, r1)) + _precalc(min_rdw, max_rdw, zr1))
    pright = int(int(_precalc(-dw, dw, r2)) + _precalc(min_rdw, max_rdw, zr2))
    ptop = int(int(_precalc(-dh, dh, r3)) + _precalc(min_rdh, max_rdh, zr1))
    pbot = int(int(_precalc(-dh, dh, r4)) + _precalc(min_rdh, max_rdh, zr2))
    if letter_box:  # pad the short direction so the window has the network's aspect
        net_ar = net_w / net_h
        if (ow / oh) / net_ar > 1:
            delta = (ow / net_ar - oh) / 2
            ptop, pbot = int(ptop - delta), int(pbot - delta)
        else:
            delta = (oh * net_ar - ow) / 2
            pleft, pright = int(pleft - delta), int(pright - delta)
    return Crop(pleft, pright, ptop, pbot, ow, oh)


def crop_resize(im: torch.Tensor, crop: Crop, out_w: int, out_h: int) -> torch.Tensor:
    """The window's pixels stretched to ``out_w × out_h`` (bilinear on pixel centres, as
    ``cv::resize`` INTER_LINEAR); outside the image: its mean colour (uint8, as OpenCV fills it)."""
    c, oh, ow = im.shape
    sw, sh = crop.swidth, crop.sheight
    if (crop.pleft, crop.ptop, sw, sh) == (0, 0, ow, oh):
        window = im
    else:
        fill = im.float().mean(dim=(1, 2)).round().to(torch.uint8)
        window = fill[:, None, None].expand(c, sh, sw).clone()
        x0, y0 = max(0, crop.pleft), max(0, crop.ptop)
        x1, y1 = min(ow, crop.pleft + sw), min(oh, crop.ptop + sh)
        if x1 > x0 and y1 > y0:
            window[:, y0 - crop.ptop : y1 - crop.ptop, x0 - crop.pleft : x1 - crop.pleft] = im[:, y0:y1, x0:x1]
    out = F.interpolate(window[None].float(), size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
    return (out / 255).clamp_(0, 1)


def crop_resize_plain(im: torch.Tensor, crop: Crop, out_w: int, out_h: int) -> torch.Tensor:
    """AlexeyAB built without OpenCV: ``crop_image`` (outside the image: the nearest edge pixel)
    then darknet's own ``resize_image`` (:func:`cnnlab.darknet.preprocess.resize`)."""
    _, oh, ow = im.shape
    rows = np.clip(np.arange(crop.ptop, crop.ptop + crop.sheight), 0, oh - 1)
    cols = np.clip(np.arange(crop.pleft, crop.pleft + crop.swidth), 0, ow - 1)
    window = im.numpy()[:, rows][:, :, cols]
    window = (window.astype(np.float64) / 255.0).astype(np.float32)  # stb_image's u8/255.
    return torch.from_numpy(resize(window, out_w, out_h))


@dataclass(frozen=True)
class Place:
    """pjreddie's placement: the image scaled to ``nw × nh`` with its corner at ``(dx, dy)`` of the canvas."""

    nw: int
    nh: int
    dx: int
    dy: int


def draw_place(rng: np.random.Generator, ow: int, oh: int, net_w: int, net_h: int, jitter: float) -> Place:
    """pjreddie ``load_data_detection``: jitter the aspect ratio, fit the long side, place at random.
    ``place_image`` takes ints, so C truncates the floats; the boxes use the same ints (darknet's
    boxes keep the floats, up to a pixel away from the pixels)."""
    dw, dh = jitter * ow, jitter * oh
    new_ar = (ow + uniform(rng, -dw, dw)) / (oh + uniform(rng, -dh, dh))
    if new_ar < 1:
        nh = float(net_h)
        nw = nh * new_ar
    else:
        nw = float(net_w)
        nh = nw / new_ar
    dx = uniform(rng, 0, net_w - nw)
    dy = uniform(rng, 0, net_h - nh)
    return Place(max(1, int(nw)), max(1, int(nh)), int(dx), int(dy))


def place_image(im: torch.Tensor, place: Place, out_w: int, out_h: int) -> torch.Tensor:
    """pjreddie ``place_image`` on a 0.5 canvas: output pixel (x, y) of the ``nw × nh`` image samples
    the source at ``(x/nw·W, y/nh·H)`` bilinearly, zero beyond the last row and column
    (``get_pixel_extend``); what falls outside the canvas is dropped (``set_pixel``)."""
    src = im.float().div_(255).numpy()
    _, H, W = src.shape
    padded = np.pad(src, ((0, 0), (0, 1), (0, 1)))  # the zero ring that get_pixel_extend reads
    rx = np.arange(place.nw, dtype=np.float32) / np.float32(place.nw) * np.float32(W)
    ry = np.arange(place.nh, dtype=np.float32) / np.float32(place.nh) * np.float32(H)
    ix, iy = np.floor(rx).astype(np.int64), np.floor(ry).astype(np.int64)
    fx, fy = rx - ix, (ry - iy)[:, None]
    rows = (1 - fx) * padded[:, :, ix] + fx * padded[:, :, ix + 1]  # (3, H+1, nw)
    scaled = (1 - fy) * rows[:, iy, :] + fy * rows[:, iy + 1, :]  # (3, nh, nw)
    canvas = np.full((3, out_h, out_w), 0.5, np.float32)
    x0, y0 = max(0, place.dx), max(0, place.dy)
    x1, y1 = min(out_w, place.dx + place.nw), min(out_h, place.dy + place.nh)
    if x1 > x0 and y1 > y0:
        canvas[:, y0:y1, x0:x1] = scaled[:, y0 - place.dy : y1 - place.dy, x0 - place.dx : x1 - place.dx]
    return torch.from_numpy(canvas)


def valid_source_boxes(boxes: np.ndarray, outside_check: bool) -> np.ndarray:
    """``correct_boxes``' refusals, on the label file's boxes: a box at exactly (0, 0) (both
    darknets), and with ``outside_check`` (AlexeyAB) one lying wholly outside the image."""
    xc, yc, w, h = boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    keep = ~((xc == 0) & (yc == 0))
    if outside_check:
        keep &= ~((xc + w / 2 < 0) | (yc + h / 2 < 0) | (xc - w / 2 > 1) | (yc - h / 2 > 1))
    return boxes[keep]


def transform_boxes(boxes: np.ndarray, sx: float, ox: float, sy: float, oy: float, flip: bool) -> np.ndarray:
    """``correct_boxes``: edges mapped by ``e·s + o``, mirrored when flipped, clamped to [0, 1]."""
    left = (boxes[:, 1] - boxes[:, 3] / 2) * sx + ox
    right = (boxes[:, 1] + boxes[:, 3] / 2) * sx + ox
    top = (boxes[:, 2] - boxes[:, 4] / 2) * sy + oy
    bottom = (boxes[:, 2] + boxes[:, 4] / 2) * sy + oy
    if flip:
        left, right = 1 - right, 1 - left
    left, right, top, bottom = (np.clip(e, 0, 1) for e in (left, right, top, bottom))
    out = np.stack([boxes[:, 0], (left + right) / 2, (top + bottom) / 2, right - left, bottom - top], axis=1)
    return out.astype(np.float32)


def crop_transform(crop: Crop) -> tuple[float, float, float, float]:
    """(sx, ox, sy, oy) of a window: a source edge at e (relative) lands at (e·ow − pleft)/swidth."""
    return crop.ow / crop.swidth, -crop.pleft / crop.swidth, crop.oh / crop.sheight, -crop.ptop / crop.sheight


def place_transform(place: Place, net_w: int, net_h: int) -> tuple[float, float, float, float]:
    """(sx, ox, sy, oy) of a placement: e → (e·nw + dx)/net_w."""
    return place.nw / net_w, place.dx / net_w, place.nh / net_h, place.dy / net_h


def keep_boxes(boxes: np.ndarray, min_w: float, min_h: float, max_boxes: int, rng: np.random.Generator) -> np.ndarray:
    """``fill_truth_detection``: at most ``max_boxes`` (darknet shuffles, then keeps the first ones;
    here a random subset, in the label file's order), then boxes narrower than ``min_w`` or lower
    than ``min_h`` dropped."""
    if len(boxes) > max_boxes:
        boxes = boxes[np.sort(rng.permutation(len(boxes))[:max_boxes])]
    return boxes[(boxes[:, 3] >= min_w) & (boxes[:, 4] >= min_h)]


def alexeyab_truth(boxes: np.ndarray, crop: Crop, flip: bool, net_w: int, net_h: int, max_boxes: int, rng: np.random.Generator) -> np.ndarray:
    """AlexeyAB ``fill_truth_detection`` for a window: the boxes of the output image, each at
    least one network pixel wide and high."""
    moved = transform_boxes(valid_source_boxes(boxes, outside_check=True), *crop_transform(crop), flip)
    return keep_boxes(moved, 1 / net_w, 1 / net_h, max_boxes, rng)


def pjreddie_truth(boxes: np.ndarray, place: Place, flip: bool, net_w: int, net_h: int, max_boxes: int, rng: np.random.Generator) -> np.ndarray:
    """pjreddie ``fill_truth_detection`` for a placement: boxes at least 0.001 of the image wide and high."""
    moved = transform_boxes(valid_source_boxes(boxes, outside_check=False), *place_transform(place, net_w, net_h), flip)
    return keep_boxes(moved, PJREDDIE_MIN_SIDE, PJREDDIE_MIN_SIDE, max_boxes, rng)


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) uint8 → (3, H, W): grey replicated, alpha dropped (as darknet loads with c=3)."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 2, 3, 4):
        raise ValueError(f"box augmentation takes a uint8 (C, H, W) image with 1-4 channels, got {image.dtype} {tuple(image.shape)}")
    if image.shape[0] in (1, 2):  # grey (+ alpha)
        return image[:1].expand(3, -1, -1)
    return image[:3]


def flipped(crop: Crop) -> Crop:
    """The window seen in the mirrored output: left and right swap."""
    return replace(crop, pleft=crop.pright, pright=crop.pleft)


def round_half_away(x: float) -> int:
    """C ``roundl``: halves away from zero (Python's round() goes to even)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))
