"""AlexeyAB's mosaic (data.c ``load_data_detection`` with ``mosaic=1``, ``blend_truth_mosaic``):
four augmented images tiled around a random cut point, boxes cut at the tiles' borders.

Each image is augmented alone at the full network size (its own window, flip and HSV), then the
part of it that fills its quadrant is copied in: quadrant 0 (top left) takes the image's bottom
right, quadrant 3 (bottom right) its top left, shifted inwards past padding the window may have
added (darknet's ``left_shift`` … ``bot_shift``). Half of the images first have their window moved
to one corner (darknet's "move each 2nd image to the corner"). Boxes move with the pixels and are
cut at their quadrant's borders, as darknet does with ``mosaic_bound=1``; darknet's default cuts
only at the canvas edge, so a box there can reach a few pixels into the neighbouring quadrant.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from cnnlab.darknet.box_geometry import Crop

MIN_OFFSET = 0.2  # the cut stays within the middle 60 % of each side


def draw_cut(rng: np.random.Generator, w: int, h: int) -> tuple[int, int]:
    """darknet ``rand_int(w·0.2, w·0.8)`` (inclusive, ints truncated) for x, then y."""
    cut_x = int(rng.integers(int(w * MIN_OFFSET), int(w * (1 - MIN_OFFSET)) + 1))
    cut_y = int(rng.integers(int(h * MIN_OFFSET), int(h * (1 - MIN_OFFSET)) + 1))
    return cut_x, cut_y


def to_corner(crop: Crop, k: int, flip: bool) -> Crop:
    """darknet's corner move for quadrant ``k``: all horizontal cut/padding onto one side (which
    one depends on the quadrant and the flip), all vertical onto one side."""
    l, r, t, b = crop.pleft, crop.pright, crop.ptop, crop.pbot
    if (k in (0, 2)) != flip:
        l, r = 0, r + l
    else:
        l, r = l + r, 0
    if k in (0, 1):
        t, b = 0, b + t
    else:
        t, b = t + b, 0
    return replace(crop, pleft=l, pright=r, ptop=t, pbot=b)


@dataclass(frozen=True)
class Tile:
    """Quadrant ``k``: the ``qw × qh`` block at ``(sx, sy)`` of the image goes to ``(dx, dy)`` of the canvas."""

    sx: int
    sy: int
    dx: int
    dy: int
    qw: int
    qh: int


def tile(k: int, cut_x: int, cut_y: int, w: int, h: int, crop: Crop) -> Tile:
    """Where quadrant ``k``'s pixels come from. ``crop`` is the window as seen in the (possibly
    flipped) output; padding it added is skipped by ``shift = padding·w/ow`` pixels (darknet's
    approximation: the padding is really ``padding·w/swidth`` pixels wide)."""
    left = min(cut_x, max(0, (-crop.pleft * w) // crop.ow))
    right = min(w - cut_x, max(0, (-crop.pright * w) // crop.ow))
    top = min(cut_y, max(0, (-crop.ptop * h) // crop.oh))
    bot = min(h - cut_y, max(0, (-crop.pbot * h) // crop.oh))
    sx = w - cut_x - right if k in (0, 2) else left
    sy = h - cut_y - bot if k in (0, 1) else top
    dx = 0 if k in (0, 2) else cut_x
    dy = 0 if k in (0, 1) else cut_y
    return Tile(sx, sy, dx, dy, cut_x if k in (0, 2) else w - cut_x, cut_y if k in (0, 1) else h - cut_y)


def paste(canvas: torch.Tensor, image: torch.Tensor, t: Tile) -> None:
    """Copy the tile's block of ``image`` (3, h, w) into ``canvas`` (3, h, w)."""
    canvas[:, t.dy : t.dy + t.qh, t.dx : t.dx + t.qw] = image[:, t.sy : t.sy + t.qh, t.sx : t.sx + t.qw]


def tile_boxes(boxes: np.ndarray, t: Tile, w: int, h: int) -> np.ndarray:
    """Boxes of the augmented image moved with the tile and cut at its borders; what is left must
    be more than one pixel wide and high (``blend_truth_mosaic``'s ``lowest_w``/``lowest_h``)."""
    left = np.clip(boxes[:, 1] * w - boxes[:, 3] * w / 2 + t.dx - t.sx, t.dx, t.dx + t.qw)
    right = np.clip(boxes[:, 1] * w + boxes[:, 3] * w / 2 + t.dx - t.sx, t.dx, t.dx + t.qw)
    top = np.clip(boxes[:, 2] * h - boxes[:, 4] * h / 2 + t.dy - t.sy, t.dy, t.dy + t.qh)
    bot = np.clip(boxes[:, 2] * h + boxes[:, 4] * h / 2 + t.dy - t.sy, t.dy, t.dy + t.qh)
    out = np.stack([boxes[:, 0], (left + right) / 2 / w, (top + bot) / 2 / h, (right - left) / w, (bot - top) / h], axis=1)
    return out[(right - left > 1) & (bot - top > 1)].astype(np.float32)
