"""Decode only what a random crop needs: a band of a JPEG, at the smallest DCT scale that covers it.

Two savings, both exact up to rounding (``tests/shards/test_decode_accuracy.py`` bounds the error):

* **Rows.** Shards are written with a restart marker after every MCU row (Pillow's
  ``restart_marker_rows=1``). Restart intervals are independently entropy-coded (DC predictors
  reset at each marker), so the rows a crop touches can be cut out of the byte stream and handed to
  the decoder as a smaller, valid JPEG: the SOF height is rewritten and the RSTn markers are
  renumbered from 0. Huffman decoding dominates at quality 90 (a 1/8-scale decode of a 256-px image
  still costs 70% of a full one), so skipping rows is what makes the biggest difference.
* **Scale.** libjpeg-turbo can run the inverse DCT at n/8 of the size (simplejpeg's
  ``min_height``/``min_width``), which replaces most of the resize and acts as its anti-aliasing,
  so the remaining bilinear resize shrinks by less than 2×.

The marker surgery is hand-written because no maintained binding exposes libjpeg-turbo's partial
decoding (``tj3SetCroppingRegion`` / ``jpeg_skip_scanlines``): simplejpeg and PyTurboJPEG decode
whole images only, and PyTurboJPEG also needs a system ``libturbojpeg``. Files without restart
markers (any JPEG from elsewhere) simply take the whole-image path.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

# OpenCV would otherwise start a thread pool in every DataLoader worker; the loader's parallelism
# is its workers.
cv2.setNumThreads(1)

_RST = re.compile(rb"\xff[\xd0-\xd7]")  # in entropy data a literal 0xFF is stuffed as FF 00
_SOF_BASELINE = (0xC0, 0xC1)  # baseline / extended sequential Huffman: restart-splittable
_SOF_ANY = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


AREA_ABOVE = float(__import__("os").environ.get("XA", "1.5"))
FAST = dict(fastdct=bool(int(__import__("os").environ.get("XF", "0"))), fastupsample=bool(int(__import__("os").environ.get("XU", "0"))))


class JpegError(ValueError):
    """Not a JPEG this module can parse (the caller falls back to a general decoder)."""


@dataclass(frozen=True)
class JpegLayout:
    width: int
    height: int
    channels: int
    mcu_height: int  # pixel rows per MCU row (8 × max vertical sampling factor)
    sof_height_at: int  # byte offset of the 2-byte height field in SOF
    scan_start: int  # first byte of entropy-coded data
    rows_per_interval: int  # MCU rows per restart interval; 0 = no usable restart markers


def parse_layout(data: bytes) -> JpegLayout:
    """Read the markers up to the scan (headers only, microseconds); raises :class:`JpegError`."""
    if data[:2] != b"\xff\xd8":
        raise JpegError("not a JPEG (no SOI marker)")
    pos, n = 2, len(data)
    width = height = channels = mcu_h = sof_at = 0
    restart = 0
    baseline = False
    hmax = vmax = 1
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise JpegError(f"corrupt JPEG header at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF_ANY:
            # SOF: length(2) precision(1) height(2) width(2) components(1), then id/sampling/table each.
            height, width, channels = struct.unpack_from(">HHB", data, pos + 5)
            if pos + 10 + 3 * channels > n or not channels:
                raise JpegError("truncated SOF")
            sof_at = pos + 5
            baseline = marker in _SOF_BASELINE
            hmax = max(data[pos + 11 + 3 * c] >> 4 for c in range(channels))
            vmax = max(data[pos + 11 + 3 * c] & 0x0F for c in range(channels))
        elif marker == 0xDD:  # DRI: restart interval in MCUs
            (restart,) = struct.unpack_from(">H", data, pos + 4)
        elif marker == 0xDA:  # SOS: entropy-coded data follows the segment
            if not width or not height:
                raise JpegError("SOS before SOF")
            if channels == 1:  # a single-component scan is not interleaved: 8×8 blocks
                hmax = vmax = 1
            mcus_per_row = math.ceil(width / (8 * hmax))
            rows = restart // mcus_per_row if baseline and restart and restart % mcus_per_row == 0 else 0
            return JpegLayout(width, height, channels, 8 * vmax, sof_at, pos + 2 + length, rows)
        pos += 2 + length
    raise JpegError("no image data (SOS marker missing)")


def _band(data: bytes, layout: JpegLayout, y0: int, y1: int) -> tuple[bytes, int]:
    """A valid JPEG holding pixel rows ``[top, bottom)`` ⊇ ``[y0, y1)``; returns it and ``top``.

    Interval k ends with RST(k mod 8) (the last one with EOI instead). Any surprise (markers not as
    we write them) returns the whole image, which is always correct, just slower.
    """
    band_h = layout.mcu_height * layout.rows_per_interval  # pixel rows per restart interval
    first, last = y0 // band_h, (y1 - 1) // band_h  # intervals the crop touches
    intervals = math.ceil(layout.height / band_h)
    if first == 0 and last == intervals - 1:
        return data, 0
    ends = [m.start() for m in _RST.finditer(data, layout.scan_start)]
    if len(ends) != intervals - 1:
        return data, 0  # markers not as written by us: decode the whole image
    starts = [layout.scan_start] + [e + 2 for e in ends]
    parts = [data[: layout.sof_height_at], struct.pack(">H", min(layout.height, (last + 1) * band_h) - first * band_h)]
    parts.append(data[layout.sof_height_at + 2 : layout.scan_start])
    for j, k in enumerate(range(first, last + 1)):
        end = ends[k] if k < intervals - 1 else len(data) - 2  # strip RST / EOI
        parts.append(data[starts[k] : end])
        if k < last:
            parts.append(bytes((0xFF, 0xD0 + j % 8)))  # renumbered from RST0
    parts.append(b"\xff\xd9")
    return b"".join(parts), first * band_h


def jpeg_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from the header, without decoding."""
    layout = parse_layout(data)
    return layout.width, layout.height


def decode_crop(
    data: bytes,
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    flip: bool = False,
    gray: bool = False,
    partial: bool = True,
    layout: JpegLayout | None = None,
) -> np.ndarray:
    """Crop ``box = (left, top, width, height)`` of a JPEG resized to ``size = (h, w)``, uint8 ``(h, w, C)``.

    Raises ``ValueError`` (including :class:`JpegError`) for data that is not a decodable JPEG.
    """
    x, y, w, h = box
    out_h, out_w = size
    layout = layout or parse_layout(data)
    top = 0
    if partial and layout.rows_per_interval:
        data, top = _band(data, layout, y, y + h)  # all markers found in one C-level regex scan
    colorspace = "GRAY" if gray else "RGB"
    # The smallest of 1/8, 1/4, 1/2 at which the crop still has at least the output's pixels. Other
    # n/8 scales would fit tighter, but libjpeg-turbo has SIMD code only for these: 7/8 is 2× slower.
    need = max(out_w / w, out_h / h)
    scale = next((s for s in (0.125, 0.25, 0.5) if s >= need), 1.0)
    if scale < 1:
        img = simplejpeg.decode_jpeg(data, colorspace=colorspace, min_width=math.ceil(layout.width * scale), min_height=1, **FAST)
    else:
        img = simplejpeg.decode_jpeg(data, colorspace=colorspace, **FAST)
    # libjpeg-turbo scales by n/8 and rounds sizes up: recover n from the width.
    f = round(8 * img.shape[1] / layout.width) / 8 if layout.width >= 16 else img.shape[1] / layout.width
    if f == 1:  # integer box: slice exactly
        band = img[y - top : y - top + h, x : x + w]
    else:
        # At reduced scale the box edges fall between decoded pixels; rounding them would shift the
        # crop by up to 4 original pixels at 1/8 (MAE ≈ 8 on texture), so sample it sub-pixel.
        bw, bh = max(1, round(w * f)), max(1, round(h * f))
        centre = ((x + w / 2) * f - 0.5, (y - top + h / 2) * f - 0.5)
        band = cv2.getRectSubPix(img, (bw, bh), centre)
    # Past 1.2× shrink, plain bilinear aliases (MAE ≈ 4 against an antialiased resize); area
    # averaging fixes that. A 256-px store never gets there for 224-px crops, so shards stay fast.
    shrink = min(band.shape[0] / out_h, band.shape[1] / out_w)
    out = cv2.resize(band, (out_w, out_h), interpolation=cv2.INTER_AREA if shrink > AREA_ABOVE else cv2.INTER_LINEAR)
    if flip:
        out = cv2.flip(out, 1)
    if out.ndim == 2:
        out = out[:, :, None]
    return out
