"""decode_image: content sniffing, modes, orientation, transparency, truncation, size guard."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.images import decode_image, image_size_and_format
from cnnlab.data.sources.base import BadImage


def _save(img: Image.Image, path: Path, fmt: str | None = None, **kwargs) -> Path:
    img.save(path, format=fmt, **kwargs)
    return path


def test_grayscale_png_gives_one_channel(tmp_path: Path) -> None:
    arr = np.arange(12 * 7, dtype=np.uint8).reshape(7, 12) * 3
    out = decode_image(_save(Image.fromarray(arr, "L"), tmp_path / "g.png"))
    assert out.dtype == torch.uint8 and out.shape == (1, 7, 12)
    assert torch.equal(out[0], torch.from_numpy(arr))


def test_bilevel_mode_1_gives_0_and_255(tmp_path: Path) -> None:
    img = Image.new("1", (4, 2), 0)
    img.putpixel((1, 1), 1)
    out = decode_image(_save(img, tmp_path / "b.png"))
    assert out.shape == (1, 2, 4)
    assert out[0, 1, 1] == 255 and out.sum() == 255


def test_rgb_from_bytes_matches_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    out = decode_image(buf.getvalue())
    assert out.shape == (3, 5, 6)
    assert torch.equal(out.permute(1, 2, 0), torch.from_numpy(arr))


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", "JPEG", quality=95)
    assert Image.open(path).mode == "CMYK"
    out = decode_image(path).float().mean(dim=(1, 2))  # (3,) mean colour
    assert out[0] > 200 and out[1] < 60 and out[2] < 60  # no cyan, no black: red


def test_palette_png_with_transparency_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (4, 1))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))  # index 0 black, 1 red
    img.putdata([0, 1, 0, 1])
    path = _save(img, tmp_path / "p.png", transparency=0)  # index 0 is fully transparent
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    out = decode_image(path)
    assert out.shape == (3, 1, 4)
    assert out[:, 0, 0].tolist() == [255, 255, 255]  # transparent black → white background
    assert out[:, 0, 1].tolist() == [255, 0, 0]  # opaque red stays red


def test_rgba_alpha_composited_on_white(tmp_path: Path) -> None:
    arr = np.zeros((1, 3, 4), dtype=np.uint8)  # black pixels with alpha 0, 128, 255
    arr[0, :, 3] = [0, 128, 255]
    out = decode_image(_save(Image.fromarray(arr, "RGBA"), tmp_path / "a.png"))
    assert out.shape == (3, 1, 3)
    assert out[:, 0, 0].tolist() == [255] * 3
    assert all(120 <= v <= 135 for v in out[:, 0, 1].tolist())  # half-transparent black → mid grey
    assert out[:, 0, 2].tolist() == [0] * 3


def test_la_gives_one_channel_composited(tmp_path: Path) -> None:
    arr = np.zeros((1, 2, 2), dtype=np.uint8)
    arr[0, :, 1] = [0, 255]
    out = decode_image(_save(Image.fromarray(arr, "LA"), tmp_path / "la.png"))
    assert out.shape == (1, 1, 2) and out[0, 0].tolist() == [255, 0]


def test_16bit_png_scaled_to_8bit(tmp_path: Path) -> None:
    arr = np.array([[0, 257 * 100, 65535, 257 * 17 + 200]], dtype=np.uint16)
    path = _save(Image.fromarray(arr), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")  # PIL reads 16-bit gray as I;16 or I
    out = decode_image(path)
    assert out.dtype == torch.uint8 and out.shape == (1, 1, 4)
    assert out[0, 0].tolist() == [0, 100, 255, 18]  # round(v / 257): not the high byte (17), not clipping


def test_float_image_in_unit_range_scaled(tmp_path: Path) -> None:
    arr = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    out = decode_image(_save(Image.fromarray(arr, "F"), tmp_path / "f.tiff"))
    assert out.shape == (1, 1, 3) and out[0, 0].tolist() == [0, 128, 255]


def test_exif_orientation_rotates(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)  # H=20, W=40: left half red, right half blue
    arr[:, :20, 0] = 255
    arr[:, 20:, 2] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path = _save(img, tmp_path / "phone.jpg", "JPEG", exif=exif, quality=95)
    out = decode_image(path)
    assert out.shape == (3, 40, 20)  # displayed portrait
    top, bottom = out[:, :20].float().mean(dim=(1, 2)), out[:, 20:].float().mean(dim=(1, 2))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_png_named_jpg_decodes_by_content(tmp_path: Path) -> None:
    arr = np.full((3, 3, 3), 77, dtype=np.uint8)
    path = tmp_path / "really_png.jpg"
    Image.fromarray(arr).save(path, format="PNG")
    assert image_size_and_format(path) == (3, 3, "PNG")
    assert torch.equal(decode_image(path), torch.full((3, 3, 3), 77, dtype=torch.uint8))


def test_text_named_jpg_is_bad_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(BadImage, match="not an image"):
        decode_image(path)
    with pytest.raises(BadImage, match="not an image"):
        decode_image(b"")


def test_truncated_jpeg_is_bad_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    assert decode_image(data).shape == (3, 64, 64)  # the whole file is fine
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert image_size_and_format(path) == (64, 64, "JPEG")  # the header alone looks fine
    with pytest.raises(BadImage, match="truncated"):
        decode_image(path)


def test_missing_file_is_bad_image(tmp_path: Path) -> None:
    with pytest.raises(BadImage, match="not found"):
        decode_image(tmp_path / "gone.png")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [11, 20])  # just over the limit (our check) and over 2x (PIL's)
def test_decompression_bomb_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    path = _save(Image.new("L", (side, side)), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(BadImage, match="too large"):
        decode_image(path)


@pytest.mark.filterwarnings("ignore")  # PIL warns about the corrupt metadata it skips
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"])
def test_corrupted_files_only_ever_raise_bad_image(fmt: str) -> None:
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, format=fmt)
    good = buf.getvalue()
    outcomes = set()
    for trial in range(40):
        data = bytearray(good)
        for _ in range(3):  # flip header bytes on even trials, anywhere on odd ones
            data[rng.integers(0, 64 if trial % 2 == 0 else len(data))] = rng.integers(0, 256)
        if trial % 3 == 0:
            data = data[: rng.integers(1, len(data))]
        try:
            out = decode_image(bytes(data))
        except BadImage:
            outcomes.add("bad")
        else:  # libraries tolerate some damage; whatever decodes must still honour the contract
            assert out.dtype == torch.uint8 and out.ndim == 3 and out.shape[0] in (1, 3)
            outcomes.add("ok")
    assert "bad" in outcomes
