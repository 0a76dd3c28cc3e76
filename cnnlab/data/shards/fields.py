"""The members of a shard sample, each one's encoder beside its decoder (ffcv's ``Field`` idea).

A sample ``KEY`` is three tar members (:mod:`.format`), written in sorted suffix order:

=============  ===================  =====================================================
member         field                holds
=============  ===================  =====================================================
``KEY.cls``    :class:`LabelField`    the class index, ASCII digits
``KEY.jpg``    :class:`ImageField`    the image, resized and encoded deterministically
or ``.png``
``KEY.json``   :class:`SidecarField`  :class:`Sidecar`: label, class name, original path and
                                    size, and the boxes (:class:`BoxesCodec`)
=============  ===================  =====================================================

The writer calls ``encode``, the shard source ``decode``; keeping both in one class is what keeps
them in step. The bytes are those of ``cnnlab-shards/1`` (unchanged by this module).
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import torch
from PIL import Image

from cnnlab.data.boxes import from_corners
from cnnlab.data.images import decode_image
from cnnlab.data.shards.jpeg import add_marker_table, restart_blocks

T = TypeVar("T")
SMALL_SIDE = 64  # "auto" stores images this small (MNIST, CIFAR, digits) losslessly as PNG
IMAGE_FORMATS = ("auto", "jpg", "png")


class Field(ABC, Generic[T]):
    """One member of a sample: a value → ``(suffix, bytes)``, and the bytes → the value."""

    @abstractmethod
    def encode(self, value: T) -> tuple[str, bytes]: ...

    @abstractmethod
    def decode(self, payload: bytes) -> T: ...


class LabelField(Field[int]):
    def encode(self, value: int) -> tuple[str, bytes]:
        return "cls", str(value).encode()

    def decode(self, payload: bytes) -> int:
        return int(payload.decode("ascii"))


@dataclass(frozen=True)
class ImageField(Field[torch.Tensor]):
    """uint8 ``(C, H, W)`` ↔ JPEG or PNG bytes; the shorter side is brought down to ``resize`` (0 = keep)."""

    resize: int
    quality: int
    image_format: str  # auto | jpg | png

    def scale(self, width: int, height: int) -> float:
        """The factor applied to an image of this size (never enlarged)."""
        return self.resize / min(width, height) if self.resize and min(width, height) > self.resize else 1.0

    def stored_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the stored image, as :meth:`encode` resizes."""
        factor = self.scale(width, height)
        if factor == 1.0:
            return width, height
        return (self.resize, round(height * factor)) if width <= height else (round(width * factor), self.resize)

    def encode(self, value: torch.Tensor) -> tuple[str, bytes]:
        c, h, w = value.shape
        arr = value.permute(1, 2, 0).numpy()
        pil = Image.fromarray(arr[:, :, 0] if c == 1 else arr, "L" if c == 1 else "RGB")
        if self.scale(w, h) != 1.0:
            pil = pil.resize(self.stored_size(w, h), Image.Resampling.BICUBIC)
        ext = self.image_format
        if ext == "auto":
            ext = "png" if min(h, w) <= SMALL_SIDE else "jpg"
        buf = io.BytesIO()
        if ext == "png":
            pil.save(buf, "PNG", compress_level=6)
            return ext, buf.getvalue()
        # Restart markers every few MCUs let the loader decode only the region a crop needs.
        mcu = 8 if pil.mode == "L" else 16  # 4:2:0 colour MCUs are 16 × 16
        pil.save(buf, "JPEG", quality=self.quality, subsampling="4:2:0", restart_marker_blocks=restart_blocks(pil.width, mcu))
        return ext, add_marker_table(buf.getvalue())

    def decode(self, payload: bytes) -> torch.Tensor:
        return decode_image(payload)


class BoxesCodec:
    """The sidecar's ``boxes``: ``[x0, y0, x1, y1]`` in pixels of the *stored* image, 2 decimals."""

    PRECISION = 0.005  # pixels: half the last stored decimal

    @staticmethod
    def encode(corners: list[list[float]], factor: float) -> list[list[float]]:
        """Corners in pixels of the source image → as stored (scaled by the image's ``factor``)."""
        return [[round(v * factor, 2) for v in c] for c in corners]

    @staticmethod
    def decode(stored: list[list[float]], label: int, original_size: tuple[int, int], factor: float) -> np.ndarray:
        """Stored corners → float32 ``(N, 5)`` rows of class ``label``, as fractions of the image
        (``original_size`` × ``factor`` pixels unrounded: a fraction is the same before and after the
        resize). A corner past an edge by no more than the stored rounding lies on the edge."""
        width, height = original_size[0] * factor, original_size[1] * factor
        xyxy = np.asarray(stored, dtype=np.float64).reshape(-1, 4)
        edge = np.array([width, height, width, height])
        xyxy = np.where((xyxy > edge) & (xyxy <= edge + BoxesCodec.PRECISION), edge, xyxy)
        return from_corners([label] * len(xyxy), xyxy, width, height)


@dataclass
class Sidecar:
    label: int
    class_name: str  # the wnid for ImageNet folders (JSON key "class")
    original: str  # where the sample came from (the source's describe())
    original_size: tuple[int, int]  # width, height before resizing
    boxes: list[list[float]] = field(default_factory=list)  # BoxesCodec's stored corners


class SidecarField(Field[Sidecar]):
    def encode(self, value: Sidecar) -> tuple[str, bytes]:
        doc = {"label": value.label, "class": value.class_name, "original": value.original,
               "original_size": [int(v) for v in value.original_size], "boxes": value.boxes}  # fmt: skip
        return "json", json.dumps(doc, sort_keys=True).encode()

    def decode(self, payload: bytes) -> Sidecar:
        """Raises ``ValueError`` for a member that is not a sidecar (``UnicodeDecodeError`` and ``JSONDecodeError`` are ones)."""
        doc = json.loads(payload)
        try:
            width, height = (int(v) for v in doc["original_size"])
            boxes = [[float(v) for v in b] for b in doc.get("boxes", [])]
            if any(len(b) != 4 for b in boxes):
                raise ValueError("a box is not 4 numbers")
            return Sidecar(int(doc["label"]), str(doc["class"]), str(doc["original"]), (width, height), boxes)
        except (KeyError, TypeError) as e:
            raise ValueError(f"missing or mistyped {e}") from None


LABEL = LabelField()
SIDECAR = SidecarField()
