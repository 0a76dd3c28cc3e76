"""Decode one image file to a uint8 ``(C, H, W)`` tensor, the same way for every command.

Decisions, in the order they are applied:

* **By content, not extension.** PIL sniffs the first bytes; a PNG named ``.jpg`` decodes, a text
  file named ``.jpg`` is ``BadImage("not an image")``.
* **Size guard before decoding.** The header is read first; more than ``max_pixels()`` pixels
  (PIL's ``Image.MAX_IMAGE_PIXELS``, about 89 Mpx by default, so one knob controls both) is
  ``BadImage("too large")`` without allocating the image (decompression bombs).
* **Full decode.** ``Image.load()`` decodes every byte so a truncated file fails here, in the
  loader's bad-sample accounting, rather than as grey stripes in a training batch. We never set
  ``ImageFile.LOAD_TRUNCATED_IMAGES``.
* **EXIF orientation** is applied (``ImageOps.exif_transpose``) so a phone photo has the shape a
  person sees. Unreadable orientation metadata leaves the pixels as stored (they are intact).
* **Channels.** Grayscale sources (modes ``1``, ``L``, ``LA``, ``I;16*``, ``I``, ``F``) give C=1;
  everything else (RGB, CMYK, YCbCr, palette, RGBA, ...) gives C=3. 16-bit values map to 8 bits
  by ``round(v / 257)`` (65535 → 255, exact endpoints). ``I`` (32-bit int) is treated as 16-bit
  data, the only common source of that mode (16-bit PNG/TIFF). ``F`` in ``[0, 1]`` is scaled by
  255, otherwise clipped to ``[0, 255]``.
* **Transparency is composited onto white**, not dropped. The colour stored under a fully
  transparent pixel is arbitrary (often black, sometimes left-over paint) and encoder dependent;
  what a person labelled is the image as a viewer shows it, which is on a light background.
  Compositing makes that deterministic. Applies to RGBA, LA, palette images with a transparent
  index and RGB/L images with a ``tRNS`` colour key.
* Multi-frame files (GIF, TIFF) use their first frame. ICC profiles are not applied.
* **Damaged JPEGs: one policy for every path** (folders, shards, predict, valid, ``data urls`` and
  ``data ilsvrc``). libjpeg does not stop at most damage: it warns, fills what it could not decode
  with grey and goes on, and PIL never passes the warning on. So JPEGs are decoded by libjpeg-turbo
  through simplejpeg with warnings made errors (:func:`decode_jpeg_checked`; same library and
  settings as PIL's, identical pixels), and each complaint is judged:

  - **bad** (``BadImage``, skipped and counted) — pixels are missing or wrong: ``Premature end of
    JPEG file`` (truncated), ``premature end of data segment`` (the scan stops early, e.g. an early
    end-of-image marker), ``bad Huffman code`` / ``bad arithmetic code`` / ``found marker ...
    instead of RSTn`` (corrupt entropy-coded data), inconsistent progression, and every fatal error;
  - **benign** (decoded, not reported) — every pixel is there: bytes after the end-of-image marker
    (libjpeg never reads them), ``extraneous bytes before marker`` (padding between segments, as in
    real ImageNet files), an unknown JFIF revision or Adobe transform code, a bad ICC marker,
    ``Invalid SOS parameters for sequential JPEG``. See :data:`BENIGN_JPEG_WARNINGS`.

  libjpeg stops at its first complaint in strict mode, so a benign one found in the headers hides
  any later damage in that file (the decode is redone leniently); one found before the
  end-of-image marker comes after all the pixel data and hides nothing.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from struct import error as struct_error  # some plugins raise struct.error on junk
from typing import Any

import numpy as np
import simplejpeg
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.data.sources.base import BadImage

_GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_WHITE = 255
_ORIENTATION = 0x0112  # EXIF tag


# PIL warns (DecompressionBombWarning) when an image is over MAX_IMAGE_PIXELS and under twice it; open_image
# turns that size into BadImage("too large") itself, so the warning would only add a second, Python-style line.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# What PIL's plugins raise on malformed data besides OSError (found in their parsers).
_DECODER_ERRORS = (ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, struct_error)


def _short(reason: str, limit: int = 100) -> str:
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def max_pixels() -> int:
    """The decompression-bomb limit in pixels (PIL's, so users raise it in one place)."""
    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else 2**62


def _open(data: bytes | str | Path) -> Image.Image:
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            return Image.open(io.BytesIO(bytes(data)))
        return Image.open(Path(data))
    except UnidentifiedImageError:
        raise BadImage("not an image") from None
    except Image.DecompressionBombError:
        raise BadImage("too large (decompression bomb guard)") from None
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except IsADirectoryError:
        raise BadImage("is a directory") from None
    except OSError as e:
        raise BadImage(_short(f"unreadable: {e}")) from None
    except _DECODER_ERRORS as e:  # a plugin choking on a malformed header
        raise BadImage(_short(f"corrupt header ({e})")) from None


# libjpeg warnings after which every pixel is still decoded correctly (substrings of its messages).
BENIGN_JPEG_WARNINGS = (
    "extraneous bytes before marker",  # padding between segments (real ImageNet files have it)
    "unknown JFIF revision",
    "unknown Adobe color transform",
    "bad ICC marker",  # the profile is unreadable; profiles are not applied anyway
    "Invalid SOS parameters for sequential JPEG",
)


def decode_jpeg_checked(data: bytes, **kw: Any) -> np.ndarray:
    """``simplejpeg.decode_jpeg(data, **kw)`` under the damage policy (module docstring): raises
    :class:`BadImage` for a damaged JPEG, decodes one with only benign complaints."""
    try:
        return simplejpeg.decode_jpeg(data, strict=True, **kw)
    except ValueError as e:
        message = str(e)
    if not any(w in message for w in BENIGN_JPEG_WARNINGS):
        raise BadImage(_short(f"{'truncated' if 'Premature end of JPEG file' in message else 'corrupt'} JPEG ({message})"))
    try:
        return simplejpeg.decode_jpeg(data, strict=False, **kw)
    except ValueError as e:
        raise BadImage(_short(f"corrupt JPEG ({e})")) from None


def jpeg_damage(data: bytes) -> str | None:
    """Why the JPEG ``data`` is bad under the policy, or None: a full entropy decode at 1/8 scale
    (the Huffman decoding, where damage shows, is all done; the inverse DCT is cheap)."""
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
        decode_jpeg_checked(data, colorspace="CMYK" if colorspace in ("CMYK", "YCCK") else "GRAY", min_width=1, min_height=1)
    except BadImage as e:
        return str(e)
    except ValueError as e:  # the header itself
        return _short(f"corrupt JPEG ({e})")
    return None


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except IsADirectoryError:
        raise BadImage("is a directory") from None
    except OSError as e:
        raise BadImage(_short(f"unreadable: {e}")) from None


def image_size_and_format(data: bytes | str | Path) -> tuple[int, int, str]:
    """``(width, height, format)`` from the header only (no pixel decoding); raises BadImage."""
    with _open(data) as img:
        return img.width, img.height, str(img.format)


def _composite_on_white(img: Image.Image) -> Image.Image:
    """RGBA/LA → RGB/L over a white background (see the module docstring for why)."""
    gray = img.mode in ("LA", "La", "L")
    img = img.convert("LA" if gray else "RGBA")
    background = Image.new(img.mode, img.size, (_WHITE, 255) if gray else (_WHITE, _WHITE, _WHITE, 255))
    return Image.alpha_composite(background, img).convert("L" if gray else "RGB")


def _gray_to_uint8(img: Image.Image) -> np.ndarray:
    """A grayscale PIL image of any bit depth → ``(H, W)`` uint8."""
    if img.mode == "1":
        img = img.convert("L")
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr
    if img.mode.startswith("I"):  # 16-bit (I;16*) or 32-bit int holding 16-bit data
        wide = np.clip(arr.astype(np.int64), 0, 65535)
        return ((wide + 128) // 257).astype(np.uint8)  # round(v / 257): 0→0, 65535→255
    if img.mode == "F":
        f = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if f.size and f.min() >= 0.0 and f.max() <= 1.0:
            f = f * 255.0
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)
    raise BadImage(f"unsupported grayscale mode {img.mode}")


def _to_array(img: Image.Image) -> np.ndarray:
    """Any decoded PIL image → ``(H, W)`` uint8 (gray) or ``(H, W, 3)`` uint8 (colour)."""
    has_key = "transparency" in img.info  # palette index or tRNS colour key
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (has_key and img.mode in ("P", "RGB", "L")):
        img = _composite_on_white(img)
    if img.mode in _GRAY_MODES:
        return _gray_to_uint8(img)
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")  # CMYK, YCbCr, P, RGBX, HSV, ...
        except (ValueError, OSError):
            raise BadImage(f"unsupported colour mode {img.mode}") from None
    return np.asarray(img)


def _plain_jpeg(raw: bytes, img: Image.Image) -> np.ndarray | None:
    """A YCbCr/RGB or grey JPEG without an Exif rotation, decoded under the damage policy; None for
    anything else. libjpeg-turbo with PIL's settings (accurate IDCT, smooth upsampling): same pixels."""
    if img.format != "JPEG" or img.mode not in ("RGB", "L"):
        return None
    try:
        if img.getexif().get(_ORIENTATION, 1) not in (1, None):
            return None
    except Exception:  # noqa: BLE001 - unreadable EXIF: the pixels are as stored
        pass
    arr = decode_jpeg_checked(raw, colorspace="GRAY" if img.mode == "L" else "RGB", fastdct=False, fastupsample=False)
    return arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr


def _oriented(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation; only when a rotation/flip is needed (exif_transpose copies the image)."""
    try:
        if img.getexif().get(_ORIENTATION, 1) in (1, None):
            return img
        return ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - unreadable EXIF must not lose intact pixels
        return img


@contextmanager
def open_image(data: bytes | str | Path) -> Iterator[Image.Image]:
    """The one error path of image decoding: open, size guard, the damaged-JPEG policy, full decode;
    raises :class:`BadImage`. :func:`decode_image` and darknet's ``load_image`` (which converts the
    pixels darknet's way) both decode through it, so one file is judged the same everywhere."""
    raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else _read(data)
    with _open(raw) as img:
        _check_size(img)
        if img.format == "JPEG" and (reason := jpeg_damage(raw)) is not None:
            raise BadImage(reason)
        _load(img)
        yield img


def _check_size(img: Image.Image) -> None:
    if img.width * img.height > max_pixels():
        raise BadImage(f"too large ({img.width}x{img.height} pixels)")


def _load(img: Image.Image) -> None:
    try:
        img.load()  # full decode: a truncated or corrupt file fails here
    except Image.DecompressionBombError:
        raise BadImage("too large (decompression bomb guard)") from None
    except (OSError, *_DECODER_ERRORS) as e:
        raise BadImage("truncated" if "truncated" in str(e) else _short(f"corrupt ({e})")) from None


def decode_image(data: bytes | str | Path) -> torch.Tensor:
    """Decode encoded bytes or a file to uint8 ``(C, H, W)``, C in {1, 3}; raises :class:`BadImage`."""
    raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else _read(data)
    with _open(raw) as img:
        _check_size(img)
        arr = _plain_jpeg(raw, img)  # the common case, decoded by libjpeg-turbo under the policy
    if arr is None:  # CMYK or rotated JPEGs, PNG, …: judged by the same policy, decoded by PIL
        with open_image(raw) as img:
            try:
                arr = _to_array(_oriented(img))
            except (OSError, ValueError) as e:
                raise BadImage(_short(f"cannot convert mode {img.mode} ({e})")) from None
    if arr.ndim == 2:
        arr = arr[:, :, None]  # (H, W) → (H, W, 1)
    # A writable, contiguous copy: PIL's buffer is read-only and must not outlive the file.
    return torch.from_numpy(np.array(arr.transpose(2, 0, 1), dtype=np.uint8, order="C"))  # (C, H, W)

