"""One damaged-JPEG policy on every path (cnnlab.data.images): damage is a BadImage everywhere,
benign oddities decode to the same pixels everywhere."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import simplejpeg
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from cnnlab.data.datasets import open_split
from cnnlab.data.imagenet.imagecheck import Unusable, normalise
from cnnlab.data.images import decode_image
from cnnlab.data.shards import jpeg
from cnnlab.data.shards.loader import EncodedFiles, FastCropDataset
from cnnlab.data.sources.base import BadImage


def _good() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")[100:196, 200:328]).save(buf, "JPEG", quality=90)  # 128 × 96
    return buf.getvalue()


def _scan(data: bytes) -> int:
    return data.index(b"\xff\xda")


GOOD = _good()
BAD = {
    # The reproduction: an end-of-image marker halfway through the scan.
    "early-eoi": GOOD[: (_scan(GOOD) + len(GOOD)) // 2] + b"\xff\xd9",
    "truncated": GOOD[: (_scan(GOOD) + len(GOOD)) // 2],
    "marker-in-scan": GOOD[: (_scan(GOOD) + len(GOOD)) // 2] + b"\xff\xd3" + GOOD[(_scan(GOOD) + len(GOOD)) // 2 :],
}
BENIGN = {
    "bytes-after-eoi": GOOD + b"\x00\x11junk after the end-of-image marker" * 4,
    "extraneous-before-eoi": GOOD[:-2] + b"\x00" * 37 + b"\xff\xd9",  # libjpeg warns; every pixel is there
}


def _paths(data: bytes, tmp_path: Path) -> dict[str, object]:
    """What each path makes of ``data``: an array, or the exception it raised."""
    root = tmp_path / "set"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(data)
    for i in range(9):  # the hold-out needs a few files; x.jpg is found by name
        (root / "a" / f"ok{i}.jpg").write_bytes(GOOD)
    src = open_split(str(root), "train")
    src = src if any(p.endswith("x.jpg") for p in src.paths) else open_split(str(root), "val")
    index = next(i for i, p in enumerate(src.paths) if p.endswith("x.jpg"))
    w, h = Image.open(io.BytesIO(GOOD)).size

    def attempt(fn):
        try:
            return np.asarray(fn())
        except (BadImage, Unusable) as e:
            return e

    crops = FastCropDataset(EncodedFiles(src), (h, w), 3, seed=0, scale=(1.0, 1.0), ratio=(w / h, w / h), hflip=0.0)
    return {
        "decode bytes (shards, predict shards:)": attempt(lambda: decode_image(data)),
        "decode file (predict, valid)": attempt(lambda: decode_image(root / "a" / "x.jpg")),
        "folder source (training, shard writer)": attempt(lambda: src.load(index)),
        "shard crop decoder": attempt(lambda: jpeg.decode_crop(data, (0, 0, w, h), (h, w))),
        "fast loader on files": crops[(0, index)][0],
        "data urls / ilsvrc": attempt(lambda: normalise(data).data),
    }


@pytest.mark.parametrize("kind", sorted(BAD))
def test_damaged_jpeg_is_bad_on_every_path(kind: str, tmp_path: Path) -> None:
    results = _paths(BAD[kind], tmp_path)
    for path, got in results.items():
        assert got is None or isinstance(got, (BadImage, Unusable)), f"{path} accepted a {kind} JPEG"


@pytest.mark.parametrize("kind", sorted(BENIGN))
def test_benign_oddities_decode_on_every_path(kind: str, tmp_path: Path) -> None:
    reference = decode_image(GOOD).permute(1, 2, 0).numpy()
    results = _paths(BENIGN[kind], tmp_path)
    for path, got in results.items():
        assert not isinstance(got, Exception) and got is not None, f"{path} refused a JPEG with {kind}: {got}"
    for path in ("decode bytes (shards, predict shards:)", "decode file (predict, valid)", "folder source (training, shard writer)"):
        assert np.array_equal(np.asarray(results[path]).transpose(1, 2, 0), reference), path
    # The crop decoder upsamples chroma the fast way (jpeg.FAST): compare it with the same decode of GOOD.
    assert np.array_equal(results["shard crop decoder"], simplejpeg.decode_jpeg(GOOD, colorspace="RGB", **jpeg.FAST))


def test_pixels_are_pillows(tmp_path: Path) -> None:
    """The policy's decoder gives Pillow's pixels exactly (both are libjpeg-turbo, same settings)."""
    for data in (GOOD, _gray()):
        want = np.asarray(Image.open(io.BytesIO(data)))
        want = want[:, :, None] if want.ndim == 2 else want
        assert np.array_equal(decode_image(data).permute(1, 2, 0).numpy(), want)


def _gray() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(load_sample_image("flower.jpg")[:, :, 1]).save(buf, "JPEG", quality=80)
    return buf.getvalue()
