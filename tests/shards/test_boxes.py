"""Shards carry boxes both ways: the bbox CSV's boxes written, read back in the (N, 5) convention; typed fields."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.boxes import BoxFixes
from cnnlab.data.datasets import open_split
from cnnlab.data.detection_sets import open_detection_split
from cnnlab.data.shards.fields import LABEL, SIDECAR, BoxesCodec, ImageField, Sidecar
from cnnlab.data.shards.source import ShardBoxes, ShardSource, open_shard_boxes
from cnnlab.data.sources.base import BadImage
from cnnlab.data.sources.bbox_csv import open_bbox_csv
from cnnlab.errors import CnnlabError

from .conftest import CLASSES, write_split


def boxes_csv(folders: Path, path: Path, relative: bool = False) -> dict[str, list[tuple[float, ...]]]:
    """Boxes for the first four training images of class 1 (the third has two, the second running past
    the right edge in pixels; `cnnlab data bbox --relative` writes fractions clamped to 0..1)."""
    rows: dict[str, list[tuple[float, ...]]] = {}
    for i, image in enumerate(sorted((folders / "train" / CLASSES[1]).iterdir())[:4]):
        w, h = Image.open(image).size
        rows[image.stem] = [(5, 7.5, w / 2, h - 3)] + ([(w / 3, 1, w if relative else w + 20, h / 2)] if i == 2 else [])
    lines = ["filename,wnid,xmin,ymin,xmax,ymax"]
    for stem, boxes in rows.items():
        w, h = Image.open(folders / "train" / CLASSES[1] / f"{stem}.JPEG").size
        for b in boxes:
            b = (b[0] / w, b[1] / h, b[2] / w, b[3] / h) if relative else b
            lines.append(f"{stem}.xml,{CLASSES[1]}," + ",".join(f"{v:.6f}" for v in b))
    path.write_text("\n".join(lines) + "\n")
    return rows


@pytest.mark.parametrize("relative", [False, True])
def test_boxes_round_trip_through_shards(folders: Path, tmp_path: Path, relative: bool) -> None:
    csv = tmp_path / "boxes.csv"
    rows = boxes_csv(folders, csv, relative)
    write_split(folders, tmp_path / "s", boxes=str(csv), resize=64)
    shards = ShardSource(tmp_path / "s")
    src = ShardBoxes(shards)
    direct = open_bbox_csv(csv, str(folders), "train")  # the same CSV joined with the original images
    by_original = {direct.describe(i): i for i in range(len(direct))}
    seen = 0
    for i in range(len(src)):
        side = shards.sidecar(i)
        stem = Path(side.original).stem
        assert side.label == shards.label(i) and side.class_name == CLASSES[side.label]
        if stem not in rows:
            assert len(src.boxes(i)) == 0 and src.label(i) == -1
            continue
        seen += 1
        # stored: corners × the resize factor, 2 decimals; read back relative to the stored image
        w, h = side.original_size
        factor = 64 / min(w, h)
        np.testing.assert_allclose(side.boxes, [[round(v * factor, 2) for v in b] for b in rows[stem]], atol=0.0101)  # 6-decimal CSV
        sw, sh = shards.stored_size(i)
        assert shards.load(i).shape[1:] == (sh, sw)
        raw = shards.stored_boxes(i)
        assert raw.dtype == np.float32 and raw.shape == (len(rows[stem]), 5) and (raw[:, 0] == 1).all()
        np.testing.assert_allclose(raw[0, 1:], [(5 + w / 2) / 2 / w, (7.5 + h - 3) / 2 / h, (w / 2 - 5) / w, (h - 10.5) / h], atol=0.01)
        # cleaned: the same boxes as reading the CSV beside the original images, to the stored precision
        np.testing.assert_allclose(src.boxes(i), direct.boxes(by_original[side.original]), atol=0.01)
        assert src.label(i) == 1 and src.difficult(i).tolist() == [False] * len(rows[stem])
    assert seen == 4
    routed = open_detection_split(f"shards:{tmp_path / 's'}", "train")  # what `cnnlab train --task detect` opens
    assert isinstance(routed, ShardBoxes) and [routed.boxes(i).tolist() for i in range(len(src))] == [src.boxes(i).tolist() for i in range(len(src))]
    tally = src.scan()
    assert tally.fixes == BoxFixes(kept=5, clamped=0 if relative else 1) and tally.missing == len(src) - 4


def test_shards_without_boxes_are_refused_as_detection_data(shards: Path) -> None:
    with pytest.raises(CnnlabError, match=r"were written without --boxes: write them again with `cnnlab data shards \.\.\. --boxes"):
        open_shard_boxes(str(shards), "train")
    plain = ShardSource(shards / "train")
    assert plain.stored_boxes(0).shape == (0, 5) and not hasattr(plain, "boxes")  # no boxes; not a detection source
    assert plain.stored_size(3) == tuple(reversed(plain.load(3).shape[1:]))


def test_a_damaged_sidecar_is_a_bad_image_naming_it(folders: Path, tmp_path: Path) -> None:
    csv = tmp_path / "boxes.csv"
    boxes_csv(folders, csv)
    out = tmp_path / "s"
    write_split(folders, out, boxes=str(csv))
    shards = ShardSource(out)
    first = out / shards.files[0]
    with tarfile.open(first) as tar:
        member = next(m for m in tar if m.name == f"{shards.keys[0]}.json")
    data = bytearray(first.read_bytes())
    data[member.offset_data] = ord("[")  # still the same length, no longer a sidecar
    first.write_bytes(bytes(data))
    src = ShardBoxes(ShardSource(out))
    with pytest.raises(BadImage, match=rf"{first}:{shards.keys[0]}\.json is corrupt"):
        src.boxes(0)
    assert src.label(0) == -1 and len(src.scan().bad) == 1


def test_each_field_decodes_what_it_encodes() -> None:
    assert LABEL.encode(17) == ("cls", b"17") and LABEL.decode(b"17") == 17
    side = Sidecar(3, "n02", "/data/a.JPEG", (300, 200), [[1.5, 2.0, 30.25, 40.0]])
    suffix, payload = SIDECAR.encode(side)
    assert suffix == "json" and SIDECAR.decode(payload) == side
    with pytest.raises(ValueError):
        SIDECAR.decode(b'{"label": 1}')
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 90, 130), dtype=np.uint8))
    field = ImageField(resize=64, quality=90, image_format="auto")
    ext, data = field.encode(img)
    assert ext == "jpg" and field.decode(data).shape == (3, 64, 92) and field.stored_size(130, 90) == (92, 64)
    ext, data = ImageField(resize=0, quality=90, image_format="png").encode(img)
    assert ext == "png" and torch.equal(ImageField(0, 90, "png").decode(data), img)  # lossless
    assert Image.open(io.BytesIO(data)).size == (130, 90)
    stored = BoxesCodec.encode([[13, 9, 65, 45]], field.scale(130, 90))
    assert stored == [[9.24, 6.4, 46.22, 32.0]]  # × 64 / 90, 2 decimals
    w, h = 130 * 64 / 90, 64  # unrounded: the fractions of the original image
    np.testing.assert_allclose(BoxesCodec.decode(stored, 2, (130, 90), 64 / 90), [[2, 27.73 / w, 19.2 / h, 36.98 / w, 25.6 / h]], atol=1e-6)
    edge = BoxesCodec.encode([[0, 0, 131, 90]], 64 / 90)  # 93.16 > 131 × 64 / 90 = 93.1555…: rounding, not outside
    assert edge == [[0, 0, 93.16, 64]]
    np.testing.assert_array_equal(BoxesCodec.decode(edge, 0, (131, 90), 64 / 90), [[0, 0.5, 0.5, 1, 1]])
    np.testing.assert_allclose(BoxesCodec.decode([[0, 0, 93, 64]], 0, (130, 90), 64 / 90)[0, 3], 93 / w, atol=1e-6)  # really outside: kept for cleaning


def test_open_split_of_the_csv_images_matches_class_folders(folders: Path, tmp_path: Path) -> None:
    csv = tmp_path / "boxes.csv"
    boxes_csv(folders, csv)
    direct = open_bbox_csv(csv, str(folders), "train")
    base = open_split(str(folders), "train")
    assert direct.classes == base.classes and [direct.describe(i) for i in range(len(base))] == [base.describe(i) for i in range(len(base))]


def test_a_row_goes_to_the_image_of_its_class_when_class_folders_share_file_names(tmp_path: Path) -> None:
    from .conftest import make_folders

    folders = make_folders(tmp_path / "f", per_class=2)
    for wnid in CLASSES:  # every class gets an img_b.JPEG
        (folders / "train" / wnid / f"{wnid}_1.JPEG").rename(folders / "train" / wnid / "img_b.JPEG")
    csv = tmp_path / "boxes.csv"
    csv.write_text(f"filename,wnid,xmin,ymin,xmax,ymax\nimg_b.JPEG,{CLASSES[2]},5,5,40,40\n")
    write_split(folders, tmp_path / "s", boxes=str(csv), resize=64)
    shards = ShardSource(tmp_path / "s")
    with_boxes = {shards.sidecar(i).class_name for i in range(len(shards)) if len(shards.stored_boxes(i))}
    assert with_boxes == {CLASSES[2]}  # the row was stored on every class's img_b
