"""Decode only what a random crop needs: its region of a JPEG, at the smallest DCT scale that covers it.

Two savings, both exact up to rounding (``tests/shards/test_decode_accuracy.py`` bounds the error):

* **Region.** Shards are written with a restart marker every 1-4 MCUs (16-64 px), dividing each
  MCU row evenly (Pillow's ``restart_marker_blocks``). Restart intervals are entropy-coded
  independently (DC predictors reset at each marker), so the intervals a crop touches can be cut
  out of the byte stream, row by row, and handed to the decoder as a smaller valid JPEG: SOF gets
  the region's width and height and the RSTn markers are renumbered from 0. Huffman decoding
  dominates at quality 90 (a 1/8-scale decode of a 256-px image still costs 70% of a full one),
  so decoding fewer bytes is what makes the difference: a random-resized crop touches about half.
* **Scale.** libjpeg-turbo can run the inverse DCT at 1/2, 1/4 or 1/8 size (simplejpeg's
  ``min_width``), which replaces most of a large shrink and acts as its anti-aliasing, so the
  remaining resize shrinks by less than 2×. Only crops at least twice the output size use it
  (original files; a 256-px store never does for 224-px crops).

The marker surgery is hand-written because no maintained binding exposes libjpeg-turbo's partial
decoding (``tj3SetCroppingRegion`` / ``jpeg_skip_scanlines``): simplejpeg and PyTurboJPEG decode
whole images only, and PyTurboJPEG also needs a system ``libturbojpeg``. Its byte loops (and the
header parse) are compiled with numba (:mod:`.jpeg_kernels`). JPEGs without suitable
restart markers (any file from elsewhere) simply take the whole-image path.
"""

from __future__ import annotations

import math
import re
import struct
import threading
from typing import NamedTuple

import cv2
import numpy as np
import simplejpeg

from cnnlab.data.images import decode_jpeg_checked
from cnnlab.data.shards import jpeg_kernels as kernels

# OpenCV would otherwise start a thread pool in every DataLoader worker; the loader's parallelism
# is its workers.
cv2.setNumThreads(1)

AREA_ABOVE = 1.5  # shrink factor past which resizing averages areas instead of bilinear sampling
# libjpeg-turbo's fast chroma upsampling (nearest instead of triangle) saves 7% of a region decode
# (182 → 169 µs per crop of a 256-px store) and moves the mean crop error against a full decode from
# 0.4 to 1.0 of 255 (large photos: 1.7 → 1.8), within the loader's bound of 2.0. The fast IDCT
# would save 5% more but take a 256-px store's error to 1.6 and a large photo's past 2.0
# (tests/shards/test_decode_accuracy.py), so it stays accurate.
FAST = {"fastdct": False, "fastupsample": True}


_TABLE_TAG = kernels.TABLE_TAG.tobytes()
_local = threading.local()


def _scratch(nbytes: int, name: str = "pixels") -> np.ndarray:
    """A per-thread buffer, reused: a fresh 100-300 KB array per image costs ~5% in page faults.
    What is in it never leaves :func:`decode_crop`: the decoded pixels (the resize makes a new
    array) and the cut-out JPEG (``name="cut"``)."""
    buf = getattr(_local, name, None)
    if buf is None or buf.size < nbytes:
        buf = np.empty(max(nbytes, 1 << 20), dtype=np.uint8)
        setattr(_local, name, buf)
    return buf


class JpegError(ValueError):
    """Not a JPEG this module can parse (the caller falls back to a general decoder)."""


class JpegLayout(NamedTuple):  # a tuple: built per sample, 4x cheaper than a frozen dataclass
    width: int
    height: int
    channels: int
    mcu_width: int  # pixels per MCU (8 × max sampling factor; 8 for a one-component scan)
    mcu_height: int
    sof_at: int  # byte offset of the SOF's height field (the width follows it)
    scan_start: int  # first byte of entropy-coded data
    # A restart interval covers interval_rows MCU rows × interval_cols MCU columns (0, 0: no usable
    # restart markers). Either whole rows (interval_cols = MCUs per row) or a divisor of a row.
    interval_rows: int
    interval_cols: int
    sos_at: int = 0  # byte offset of the SOS marker
    table_at: int = 0  # where our APP9 marker table's offsets start (0: none)
    table_count: int = 0  # offsets in the table: > 0 as 4-byte, < 0 as 2-byte numbers
    exif: bool = False  # has an Exif segment (which may rotate the image: see ``plain``)
    baseline: bool = False  # sequential Huffman (SOF0/SOF1): one scan, MCU rows in order
    restart: int = 0  # the DRI restart interval in MCUs (0: no restart markers)

    @property
    def plain(self) -> bool:
        """Decodable here as is: grey or YCbCr colour, no Exif orientation to apply (CMYK and
        rotated camera photos go to the general decoder). Shards are always plain."""
        return self.channels in (1, 3) and not self.exif

    @property
    def mcus_per_row(self) -> int:
        return -(-self.width // self.mcu_width)

    @property
    def mcu_rows(self) -> int:
        return -(-self.height // self.mcu_height)


_PARSE_ERRORS = {
    kernels.NO_SOI: "not a JPEG (no SOI marker)",
    kernels.BAD_MARKER: "corrupt JPEG header at byte {at}",
    kernels.TRUNCATED_SOF: "truncated SOF",
    kernels.SOS_BEFORE_SOF: "SOS before SOF",
    kernels.NO_SOS: "no image data (SOS marker missing)",
}


def parse_layout(data: bytes) -> JpegLayout:
    """Read the markers up to the scan (headers only, about a microsecond); raises :class:`JpegError`."""
    status, at, width, height, channels, hmax, vmax, sof_at, scan_start, sos_at, table_at, table_count, exif, baseline, restart = (
        kernels.parse_header(data))  # fmt: skip
    if status != kernels.OK:
        raise JpegError(_PARSE_ERRORS[status].format(at=at))
    per_row = -(-width // (8 * hmax))
    rows = cols = 0
    if baseline and restart and restart % per_row == 0:
        rows, cols = restart // per_row, per_row
    elif baseline and restart and per_row % restart == 0:
        rows, cols = 1, restart
    return JpegLayout(width, height, channels, 8 * hmax, 8 * vmax, sof_at, scan_start, rows, cols, sos_at, table_at,
                      table_count, exif, baseline, restart)  # fmt: skip


def restart_blocks(width: int, mcu_width: int = 16) -> int:
    """The restart interval (in MCUs) the writer uses: a small divisor of the MCUs per row, so a
    crop can be cut out column-wise too (1 when the row's MCU count has none up to 4)."""
    per_row = -(-width // mcu_width)
    return next((k for k in (2, 3, 4) if per_row % k == 0), 1)


def _region(data: bytes, layout: JpegLayout, x0: int, y0: int, x1: int, y1: int) -> tuple[bytes | np.ndarray, int, int, int, int]:
    """A valid JPEG holding the restart intervals that pixels ``[x0, x1) × [y0, y1)`` touch.

    Returns it with its left, top, width and height in the original. The kept intervals, row by
    row, are concatenated and their markers renumbered from RST0; SOF gets the new width and height
    (the restart interval stays valid because whole intervals make up each new MCU row); the last
    marker becomes EOI (:func:`~.jpeg_kernels.cut_region`). The markers are found from our APP9
    table, or by scanning the data when there is none or it is wrong. Any other surprise (markers
    not as we write them) returns the whole image, which is always correct, just slower. The
    cut-out lives in a per-thread buffer until the next call.
    """
    iw, ih = layout.interval_cols * layout.mcu_width, layout.interval_rows * layout.mcu_height  # pixels
    n_rows = -(-layout.mcu_rows // layout.interval_rows)
    n_cols = layout.mcus_per_row // layout.interval_cols
    a0, a1, b0, b1 = y0 // ih, (y1 - 1) // ih, x0 // iw, (x1 - 1) // iw
    whole = data, 0, 0, layout.width, layout.height
    if a0 == 0 and a1 == n_rows - 1 and b0 == 0 and b1 == n_cols - 1:
        return whole
    count = n_rows * n_cols
    left, top = b0 * iw, a0 * ih
    size = min(layout.height, (a1 + 1) * ih) - top, min(layout.width, (b1 + 1) * iw) - left
    out = _scratch(len(data), "cut")
    grid = count, layout.scan_start, n_cols, (a0, a1), (b0, b1), layout.sof_at, size
    cut = -1
    if abs(layout.table_count) == count - 1:
        cut = kernels.cut_region(data, out, data, layout.table_at, 4 if layout.table_count > 0 else 2, *grid)
    if cut < 0:  # no table, or one that does not point at markers (damaged, or another tool's APP9)
        ends = restart_markers(np.frombuffer(data, dtype=np.uint8), layout.scan_start) - layout.scan_start
        if len(ends) == count - 1:
            cut = kernels.cut_region(data, out, ends.astype(">u4").tobytes(), 0, 4, *grid)
    if cut < 0:
        return whole  # markers not as written by us: decode the whole image
    return out[:cut], left, top, size[1], size[0]


def restart_markers(buf: np.ndarray, scan_start: int) -> np.ndarray:
    """Byte offsets of the RSTn markers after ``scan_start`` (a scan of the whole entropy-coded data)."""
    # A literal 0xFF in entropy-coded data is stuffed as FF 00, so FF D0..D7 are always markers.
    ff = np.flatnonzero(buf[scan_start:-1] == 0xFF)
    ff += scan_start
    return ff[(buf[ff + 1] & 0xF8) == 0xD0]


def add_marker_table(data: bytes) -> bytes:
    """Insert an APP9 segment listing where each restart marker is, so a reader need not scan the
    entropy-coded data for them (a third of the cost of cutting out a region). Decoders skip APPn
    segments they do not know. Returned unchanged when there are no markers or too many to list."""
    layout = parse_layout(data)
    if not layout.interval_rows:
        return data
    ends = restart_markers(np.frombuffer(data, dtype=np.uint8), layout.scan_start) - layout.scan_start
    wide = len(ends) > 0 and ends[-1] > 0xFFFF
    payload = _TABLE_TAG + (b"\x04" + ends.astype(">u4").tobytes() if wide else b"\x02" + ends.astype(">u2").tobytes())
    if len(payload) + 2 > 0xFFFF:
        return data
    segment = bytes((0xFF, kernels.TABLE_MARKER)) + struct.pack(">H", len(payload) + 2) + payload
    return data[: layout.sos_at] + segment + data[layout.sos_at :]


_TRAILING_DATA = re.compile(r"Corrupt JPEG data: \d+ extraneous bytes before marker 0xd9")
_CANARY = np.frombuffer(b"\x01\xfe\x02\xfd\x03\xfc\x04\xfb", dtype=np.uint8)  # no photo's last 8 bytes


def _decode_top(data: bytes, layout: JpegLayout, rows: int, colorspace: str, channels: int) -> np.ndarray | None:
    """The top ``rows`` pixel rows of a one-scan JPEG, decoding only the MCU rows they need (a crop
    ending at 85% of the height, on average, saves 15% of a whole decode); None when the shortcut
    does not hold and the caller should decode the whole image.

    The SOF is given the smaller height: libjpeg decodes that many rows, and then, looking for the
    end of the image, skips the rest of the scan with the complaint "N extraneous bytes before
    marker 0xd9". Strict mode (the damage policy) raises on it, but only after every row is in our
    buffer: the complaint comes from ``jpeg_finish_decompress``, after the last scanline. The buffer
    is checked to have been written (its last bytes, preset to a pattern, changed). Any other
    complaint — damage within the rows — returns None, so the whole image goes through the policy."""
    cut = data[: layout.sof_at] + struct.pack(">H", rows) + data[layout.sof_at + 2 :]
    n = rows * layout.width * channels
    buf = _scratch(n + len(_CANARY))
    buf[n - len(_CANARY) : n] = _CANARY
    try:
        return simplejpeg.decode_jpeg(cut, colorspace=colorspace, strict=True, buffer=buf, **FAST)
    except ValueError as e:
        if not _TRAILING_DATA.fullmatch(str(e)) or np.array_equal(buf[n - len(_CANARY) : n], _CANARY):
            return None
    return buf[:n].reshape(rows, layout.width, channels)


def decode_crop(
    data: bytes,
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    flip: bool = False,
    gray: bool = False,
    partial: bool = True,
    layout: JpegLayout | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Crop ``box = (left, top, width, height)`` of a JPEG resized to ``size = (h, w)``, uint8 ``(h, w, C)``
    (written into ``out``, a contiguous array of that shape, when given: a slot of a batch).

    Raises :class:`JpegError` (a ``ValueError``) for data that is not a JPEG this module parses and
    :class:`~cnnlab.data.sources.base.BadImage` for a damaged one (the policy in :mod:`cnnlab.data.images`).
    """
    x, y, w, h = box
    out_h, out_w = size
    layout = layout or parse_layout(data)
    left, top, region_w, region_h = 0, 0, layout.width, layout.height
    if partial and layout.interval_rows:
        data, left, top, region_w, region_h = _region(data, layout, x, y, x + w, y + h)
    colorspace = "GRAY" if gray else "RGB"
    # The smallest of 1/8, 1/4, 1/2 at which the crop still has at least the output's pixels. Other
    # n/8 scales would fit tighter, but libjpeg-turbo has SIMD code only for these: 7/8 is 2× slower.
    need = max(out_w / w, out_h / h)
    scale = next((s for s in (0.125, 0.25, 0.5) if s >= need), 1.0)
    img = None
    if partial and scale == 1 and layout.baseline and not layout.restart:
        # No restart markers (a file from elsewhere): decode only the MCU rows down to the crop's
        # bottom, plus one so chroma upsampling at the edge sees its neighbour. (With markers that
        # do not divide a row, the skipped rest would hold RSTn and the shortcut would always fail.)
        rows = min(layout.height, (-(-(y + h) // layout.mcu_height) + 1) * layout.mcu_height)
        if rows < layout.height:
            img = _decode_top(data, layout, rows, colorspace, 1 if gray else 3)
    if img is None:
        nbytes = (region_w + 8) * (region_h + 8) * (1 if gray else 3)  # ≥ any scaled size, rounded up
        kw = {"min_width": math.ceil(region_w * scale), "min_height": 1} if scale < 1 else {}
        # The damaged-JPEG policy of every other path (cnnlab.data.images): damage is BadImage, benign complaints pass.
        img = decode_jpeg_checked(data, colorspace=colorspace, buffer=_scratch(nbytes), **kw, **FAST)
    # libjpeg-turbo scales by n/8 and rounds sizes up: recover n from the width.
    f = round(8 * img.shape[1] / region_w) / 8 if region_w >= 16 else scale
    box = (x - left, y - top, w, h)
    if min(w / out_w, h / out_h) * f <= AREA_ABOVE:
        return warp_into(img, box, f, size, flip, out)
    if f == 1:  # integer box: slice exactly
        band = img[box[1] : box[1] + h, box[0] : box[0] + w]
    else:
        # At reduced scale the box edges fall between decoded pixels; rounding them would shift the
        # crop by up to 4 original pixels at 1/8 (MAE ≈ 8 on texture), so sample it sub-pixel.
        bw, bh = max(1, round(w * f)), max(1, round(h * f))
        band = cv2.getRectSubPix(img, (bw, bh), ((box[0] + w / 2) * f - 0.5, (box[1] + h / 2) * f - 0.5))
    return resize_into(band, size, flip, out)


def warp_into(img: np.ndarray, box: tuple[int, int, int, int], f: float, size: tuple[int, int], flip: bool,
              out: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Bilinear crop-and-resize of ``box`` (in full-resolution pixels) from ``img`` decoded at scale
    ``f``, flipped if asked, as ``(h, w, C)`` (into ``out`` when given): one ``cv2.warpAffine``.

    Output pixel u samples the source at ``(x + (u + 0.5) w / out_w) f - 0.5`` (``cv2.resize``'s and
    torchvision's half-pixel rule, edges clamped); mirrored for a flip. One pass instead of cut and
    resize: 48 µs against 80 for a 224-px crop of a 256-px store (OpenCV 5.1, one core, Intel Xeon),
    at 1/32-pixel sampling precision. Bilinear only: strong shrinks go through :func:`resize_into`.

    A flip mirrors the warped crop in place afterwards (9 µs) rather than warping with a negative
    x scale: OpenCV leaves its fast path for a mirrored map (on an AMD EPYC Zen 4, 252 against 97 µs
    per crop)."""
    x, y, w, h = box
    out_h, out_w = size
    sx, sy = w / out_w * f, h / out_h * f
    cx, cy = (x + 0.5 * w / out_w) * f - 0.5, (y + 0.5 * h / out_h) * f - 0.5
    m = np.array(((sx, 0.0, cx), (0.0, sy, cy)))
    plane = img.ndim == 3 and img.shape[2] == 1  # OpenCV reads and writes one channel as 2-D
    dst = None if out is None else out[:, :, 0] if plane else out
    got = cv2.warpAffine(img[:, :, 0] if plane else img, m, (out_w, out_h), dst=dst,
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    if flip:  # in place: OpenCV swaps the columns pairwise
        cv2.flip(got, 1, dst=got)
    if out is not None:
        return out
    return got[:, :, None] if got.ndim == 2 else got


def resize_into(band: np.ndarray, size: tuple[int, int], flip: bool, out: np.ndarray | None = None) -> np.ndarray:
    """``band`` (H, W[, C]) resized to ``size = (h, w)`` and optionally flipped, as ``(h, w, C)``;
    into ``out`` when given (OpenCV writes 2-D for one channel, so it gets the channel's plane)."""
    out_h, out_w = size
    shrink = min(band.shape[0] / out_h, band.shape[1] / out_w)
    # Past 1.5× shrink, plain bilinear aliases (error against an antialiased resize doubles); area
    # averaging fixes that. A 256-px store gets there only for the widest crops, so shards stay fast.
    interpolation = cv2.INTER_AREA if shrink > AREA_ABOVE else cv2.INTER_LINEAR
    dst = None if out is None else out[:, :, 0] if out.shape[2] == 1 else out
    if flip:
        dst = cv2.flip(cv2.resize(band, (out_w, out_h), interpolation=interpolation), 1, dst=dst)
    else:
        dst = cv2.resize(band, (out_w, out_h), dst=dst, interpolation=interpolation)
    if out is not None:
        return out
    return dst if dst.ndim == 3 else dst[:, :, None]
