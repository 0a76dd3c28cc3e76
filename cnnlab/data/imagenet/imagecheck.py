"""Classify what arrived (JPEG, PNG, CMYK, grayscale, HTML, corrupt) and normalise it to RGB JPEG.

Separate from ``cnnlab.data.images`` (which decodes to tensors for training): here we need to know
*why* bytes are unusable and to re-encode only what must change, keeping good JPEGs byte-identical.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from cnnlab.data.images import jpeg_damage

MAX_PIXELS = 89_478_485  # PIL's own bomb threshold; larger images are refused, not decoded
JPEG_QUALITY = 90  # re-encode quality for converted / resized images (libjpeg scale 1-95)
JPEG_MAX_SIDE = 65_500  # libjpeg's limit per side: a wider PNG cannot become a JPEG


class Unusable(Exception):
    """The bytes cannot become a training image; ``outcome`` names the report bucket."""

    def __init__(self, outcome: str, detail: str = "") -> None:
        super().__init__(f"{outcome}: {detail}" if detail else outcome)
        self.outcome = outcome
        self.detail = detail


@dataclass(frozen=True)
class Normalised:
    data: bytes  # RGB (or kept grayscale) JPEG bytes to write
    outcome: str  # ok | converted_cmyk | converted_png | converted_other | grayscale
    width: int
    height: int


_MARKUP_PREFIXES = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<!--", b"{", b"<")


def looks_like_markup(data: bytes) -> bool:
    """HTML/XML/JSON pages that servers return instead of an image (error pages, login walls)."""
    head = data[:512].lstrip().lower()
    return head.startswith(_MARKUP_PREFIXES)


def normalise(
    data: bytes,
    *,
    grayscale: str = "keep",
    resize_short: int | None = None,
) -> Normalised:
    """Validate ``data`` fully (truncation is found only by decoding everything) and return JPEG bytes.

    ``grayscale``: ``keep`` writes single-channel JPEGs unchanged, ``rgb`` converts them.
    ``resize_short``: shrink so the shorter side is this many pixels (never enlarges).
    Raises :class:`Unusable` with outcome ``not_image``, ``corrupt`` or ``too_large``.
    """
    if not data:
        raise Unusable("not_image", "empty body")
    try:
        im = Image.open(io.BytesIO(data))
        fmt = im.format
        if im.size[0] * im.size[1] > MAX_PIXELS:  # checked before decoding: bombs are an outcome
            raise Unusable("too_large", f"{im.size[0]}x{im.size[1]} pixels")
        im.load()  # full decode: raises on truncated or broken data
    except Image.DecompressionBombError as e:
        raise Unusable("too_large", str(e)) from None
    except Image.UnidentifiedImageError:
        kind = "markup page" if looks_like_markup(data) else "unrecognised bytes"
        raise Unusable("not_image", kind) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise Unusable("corrupt", str(e)) from None

    if fmt == "JPEG" and (damage := jpeg_damage(data)) is not None:
        raise Unusable("corrupt", damage)  # the policy of every path: PIL fills damage with grey silently
    w, h = im.size
    if w < 1 or h < 1:
        raise Unusable("corrupt", f"size {w}x{h}")
    mode = im.mode
    is_gray = mode in ("L", "1", "I;16", "I", "LA") or (mode == "P" and _palette_is_gray(im))

    if fmt == "JPEG" and mode == "CMYK":
        outcome = "converted_cmyk"
    elif fmt == "JPEG" and mode == "RGB":
        outcome = "ok"
    elif fmt == "JPEG" and mode == "L":
        outcome = "grayscale"
    elif fmt == "PNG":
        outcome = "converted_png"
    else:
        outcome = "converted_other"

    target_mode = "L" if (is_gray and grayscale == "keep") else "RGB"
    needs_resize = resize_short is not None and min(w, h) > resize_short
    keep_bytes = fmt == "JPEG" and mode == target_mode and not needs_resize
    if keep_bytes:
        return Normalised(data, outcome, w, h)

    try:
        return _reencode(im, outcome, target_mode, is_gray, resize_short if needs_resize else None)
    except Unusable:
        raise
    except (OSError, ValueError, MemoryError) as e:  # the encoder refusing this image is this image's outcome
        raise Unusable("unencodable", f"{w}x{h} {mode}: {e}"[:200]) from None


def _reencode(im: Image.Image, outcome: str, target_mode: str, is_gray: bool, resize_short: int | None) -> Normalised:
    """Convert (transparency onto white, 16-bit to 8), resize, encode as JPEG; raises on encoder limits."""
    w, h = im.size
    mode = im.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        # Transparent pixels become white, as a viewer would show them, not black.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    if mode in ("I;16", "I"):
        im = im.point(lambda v: v / 256).convert("L") if mode == "I;16" else im.convert("L")
    im = im.convert(target_mode)
    if resize_short is not None:
        scale = resize_short / min(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        im = im.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    if max(im.size) > JPEG_MAX_SIDE:
        raise Unusable("too_large", f"{im.size[0]}x{im.size[1]} pixels: a JPEG holds at most {JPEG_MAX_SIDE} per side (try --resize)")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=JPEG_QUALITY)
    if outcome == "grayscale" and target_mode == "RGB":
        outcome = "converted_grayscale"
    elif outcome == "ok" and is_gray:
        outcome = "grayscale"
    if is_gray and outcome in ("converted_png", "converted_other") and target_mode == "L":
        pass  # a gray PNG stays gray; its bucket still says it was a PNG
    return Normalised(buf.getvalue(), outcome, im.size[0], im.size[1])


def _palette_is_gray(im: Image.Image) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def check(data: bytes, *, grayscale: str = "keep", resize_short: int | None = None) -> Normalised | Unusable:
    """:func:`normalise` for one image of a data command: every failure is an outcome, never an
    exception. A failure nobody foresaw becomes ``error`` with its type and message (counted and
    listed in report.json): one odd image must not stop, for good, a run over a million."""
    try:
        return normalise(data, grayscale=grayscale, resize_short=resize_short)
    except Unusable as e:
        return e
    except Exception as e:  # noqa: BLE001 - see the docstring; the id and the reason are reported
        return Unusable("error", f"{type(e).__name__}: {e}"[:200])
