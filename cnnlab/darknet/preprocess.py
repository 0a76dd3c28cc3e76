"""Darknet's image preprocessing, bit-exact on lossless images (image.c).

Hand-written rather than torchvision/PIL resizing because darknet's bilinear resize is its own:
align-corners scale ``(W-1)/(w-1)``, horizontal pass then vertical pass in float32, last row/column
copied from the edge. PIL decodes PNGs identically to stb_image; JPEG decoders differ by a few
levels (see shared/darknet/README.md).

* pjreddie, classifier and detector: :func:`letterbox` (0.5 grey canvas, no crop).
* AlexeyAB classifier: :func:`resize_min_crop`; AlexeyAB detector: :func:`resize` (stretch), or
  :func:`letterbox` with ``--letter-box`` / ``[net] letter_box=1``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cnnlab.data.images import open_image
from cnnlab.data.sources.base import BadImage
from cnnlab.errors import CnnlabError

# planar float32 images: (C, H, W)


def load_image(path: str | Path) -> np.ndarray:
    """RGB (grey replicated, alpha dropped) as float32 CHW in [0, 1], like ``load_image_color``.

    Decoded through cnnlab's one image error path (:func:`cnnlab.data.images.open_image`: the size
    guard against decompression bombs, a full decode, every decoder error a :class:`BadImage`), then
    converted as stb_image converts (no EXIF rotation, alpha dropped, not composited)."""
    try:
        with open_image(Path(path)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except BadImage as e:
        raise CnnlabError(f"cannot load image {str(path)!r}: {e}") from None
    except (OSError, ValueError) as e:  # convert() of an odd mode
        raise CnnlabError(f"cannot load image {str(path)!r}: cannot convert to RGB ({e})") from None
    # darknet: (float)u8 / 255. — a double division rounded to float
    return (rgb.astype(np.float64) / 255.0).astype(np.float32).transpose(2, 0, 1).copy()


def resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """darknet ``resize_image``: bilinear, align-corners, horizontal then vertical, float32."""
    c, H, W = im.shape
    one = np.float32(1)
    part = np.empty((c, H, w), np.float32)
    if w > 1 and W > 1:
        ws = np.float32(W - 1) / np.float32(w - 1)
        sx = np.arange(w, dtype=np.float32) * ws
        ix = sx.astype(np.int64)
        dx = (sx - ix.astype(np.float32)).astype(np.float32)
        ix1 = np.minimum(ix + 1, W - 1)
        part[:] = (one - dx) * im[:, :, ix] + dx * im[:, :, ix1]
    part[:, :, w - 1] = im[:, :, W - 1]  # last column (and W == 1) copies the edge
    if W == 1:
        part[:] = im[:, :, :1]
    # vertical pass: out = (1-dy)·row[iy], then + dy·row[iy+1] except on the last row
    out = np.empty((c, h, w), np.float32)
    hs = np.float32(H - 1) / np.float32(h - 1) if h > 1 else np.float32(0)
    sy = np.arange(h, dtype=np.float32) * hs
    iy = sy.astype(np.int64)
    dy = (sy - iy.astype(np.float32)).astype(np.float32)[None, :, None]
    iy1 = np.minimum(iy + 1, H - 1)
    out[:] = (one - dy) * part[:, iy, :]
    out[:, : h - 1, :] += (dy * part[:, iy1, :])[:, : h - 1, :]  # the last row is not blended
    return out


def letterbox(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """darknet ``letterbox_image``: keep the aspect, centre on a 0.5 canvas."""
    c, H, W = im.shape
    if np.float32(w) / np.float32(W) < np.float32(h) / np.float32(H):
        nw, nh = w, (H * w) // W
    else:
        nh, nw = h, (W * h) // H
    r = resize(im, nw, nh)
    box = np.full((c, h, w), 0.5, np.float32)
    dx, dy = (w - nw) // 2, (h - nh) // 2
    box[:, dy : dy + nh, dx : dx + nw] = r
    return box


def resize_min_crop(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """AlexeyAB classifier: short side to ``w`` (even for the height), then a centre crop of w×h."""
    c, H, W = im.shape
    if W < H:
        nw, nh = w, (H * w) // W
    else:
        nh, nw = w, (W * w) // H
    r = im if (nw, nh) == (W, H) else resize(im, nw, nh)
    dx, dy = (nw - w) // 2, (nh - h) // 2
    # crop_image clamps out-of-range coordinates to the edge
    rows = np.clip(np.arange(dy, dy + h), 0, nh - 1)
    cols = np.clip(np.arange(dx, dx + w), 0, nw - 1)
    return r[:, rows][:, :, cols].copy()


def preprocess(im: np.ndarray, w: int, h: int, flavor: str, task: str, letter_box: bool = False) -> np.ndarray:
    """The one preprocessing path per (flavor, task), shared by every command."""
    if flavor == "pjreddie":
        return letterbox(im, w, h)
    if task == "classify":
        return resize_min_crop(im, w, h)
    return letterbox(im, w, h) if letter_box else resize(im, w, h)
