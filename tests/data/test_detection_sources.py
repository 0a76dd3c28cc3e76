"""Detection sources: YOLO labels by both darknet path rules, VOC XML with difficult, the bbox CSV."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.boxes import BoxFixes
from cnnlab.data.sources.base import BadImage
from cnnlab.data.sources.bbox_csv import open_bbox_csv, read_bbox_csv
from cnnlab.data.sources.voc import open_voc
from cnnlab.data.sources.yolo_labels import label_path, open_yolo
from cnnlab.errors import CnnlabError

NAMES = ["circle", "square", "triangle"]


def png(path: Path, size: tuple[int, int] = (40, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)
    return path


# Every expected path below is what darknet's own functions print for the image path (AlexeyAB
# utils.c replace_image_to_label; pjreddie data.c fill_truth_detection's find_replace calls), built
# from the two mirrors outside the repository for this check.
@pytest.mark.parametrize(
    ("image", "alexeyab", "pjreddie"),
    [
        ("data/obj/img1.jpg", "data/obj/img1.txt", "data/obj/img1.txt"),
        ("/d/VOC2007/JPEGImages/0001.jpg", "/d/VOC2007/labels/0001.txt", "/d/VOC2007/labels/0001.txt"),
        ("/coco/images/train2014/x.jpg", "/coco/labels/train2014/x.txt", "/coco/labels/train2014/x.txt"),
        ("/d/images/a.png", "/d/images/a.txt", "/d/labels/a.txt"),  # AlexeyAB maps COCO's folders only
        ("/d/raw/strawberry.JPEG", "/d/raw/strawberry.txt", "/d/labels/strawberry.txt"),  # first 'raw' only
        ("/d/strawberry.jpg", "/d/strawberry.txt", "/d/stlabelsberry.txt"),  # pjreddie's substring rule, as is
        ("/d/a.jpeg", "/d/a.txt", "/d/a.jpeg"),  # pjreddie knows no .jpeg
        ("/d/a.jpg.d/b.png", "/d/a.jpg.d/b.txt", "/d/a.txt.d/b.txt"),  # AlexeyAB: the extension at the end only
        ("C:\\d\\JPEGImages\\a.bmp", "C:\\d\\labels\\a.txt", "C:\\d\\labels\\a.bmp"),  # no .bmp rule in pjreddie's
        ("/coco/images/train2017/x.JPEG", "/coco/labels/train2017/x.txt", "/coco/labels/train2017/x.txt"),
        ("/d/x.jpg.png", "/d/x.jpg.txt", "/d/x.txt.txt"),  # AlexeyAB: the last extension only
        ("/d/x.gif", "/d/x.gif", "/d/x.gif"),  # an extension neither knows: unchanged
        ("/d/a b.jpg \t", "/d/a b.txt", "/d/a b.txt \t"),  # AlexeyAB trims spaces and tabs first
    ],
)
def test_label_path_rules(image: str, alexeyab: str, pjreddie: str) -> None:
    assert label_path(image, "alexeyab") == alexeyab
    assert label_path(image, "pjreddie") == pjreddie


def test_alexeyab_labels_beside_images_in_a_folder(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n\n2 0.25 0.75 0.1 0.1\n")
    png(tmp_path / "sub" / "b.jpg")  # no label: an image without boxes
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)  # a link back into the folder is not walked again
    src = open_yolo(tmp_path, NAMES, "alexeyab")
    assert [Path(src.describe(i)).name for i in range(len(src))] == ["a.png", "b.jpg"]
    np.testing.assert_array_equal(src.boxes(0), np.array([[1, 0.5, 0.5, 0.2, 0.4], [2, 0.25, 0.75, 0.1, 0.1]], dtype=np.float32))
    assert src.difficult(0).tolist() == [False, False]
    assert src.label(0) == 1 and src.label(1) == -1
    assert src.boxes(1).shape == (0, 5)
    assert src.load(1).shape == (3, 20, 40)
    tally = src.tally
    assert (tally.images, tally.missing, tally.fixes) == (2, 1, BoxFixes(kept=2))
    lines = tally.lines()
    assert lines[0] == "boxes of 2 images: kept 2"
    assert lines[1] == (f"1 images have no label file and count as images without boxes (AlexeyAB's rule: the .txt beside the image "
                        f"(/JPEGImages/ → /labels/ and COCO's /images/<split>/ → /labels/<split>/)); "
                        f"e.g. {tmp_path / 'sub' / 'b.jpg'}: no {tmp_path / 'sub' / 'b.txt'}")  # fmt: skip


def test_pjreddie_rule_from_a_list_with_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "set"
    for name in ("x", "y", "z"):
        png(root / "images" / f"{name}.jpg")
    (root / "labels").mkdir()
    (root / "labels" / "x.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "images" / "y.txt").write_text("2 0.5 0.5 0.5 0.5\n")  # beside the image: AlexeyAB's place
    listing = root / "train.txt"
    listing.write_text("images/x.jpg\r\nimages/y.jpg\n\n  images/z.jpg  \n")  # relative to the list's folder
    monkeypatch.chdir(tmp_path)
    src = open_yolo("set/train.txt", NAMES, "pjreddie")
    assert [src.describe(i) for i in range(3)] == [str(Path("set/images") / f"{n}.jpg") for n in "xyz"]
    assert src.label_file(0) == str(Path("set/labels/x.txt"))
    assert src.boxes(0).tolist() == [[0, 0.5, 0.5, 0.5, 0.5]]
    assert len(src.boxes(1)) == 0 and len(src.boxes(2)) == 0
    assert src.tally.missing == 2
    assert src.tally.missing_examples[0] == "set/images/y.jpg: no set/labels/y.txt (but set/images/y.txt exists: alexeyab's rule finds it)"
    assert "pjreddie's rule: the first 'images', 'JPEGImages' and 'raw' in the path → 'labels'" in src.tally.lines()[1]
    # darknet opens a relative path from the working directory first
    monkeypatch.chdir(root)
    assert open_yolo(listing, NAMES, "pjreddie").describe(0) == "images/x.jpg"
    assert open_yolo(listing, NAMES, "alexeyab").boxes(1).tolist() == [[2, 0.5, 0.5, 0.5, 0.5]]
    # pjreddie's rule leaves .jpeg as it is: the image would be read as its own label file
    png(root / "images" / "w.jpeg")
    (root / "w.txt").write_text("images/w.jpeg\n")
    odd = open_yolo(root / "w.txt", NAMES, "pjreddie")
    assert len(odd.boxes(0)) == 0 and odd.tally.missing_examples == [
        "images/w.jpeg: pjreddie's rule does not turn its extension into .txt; rename it to .jpg or .png"]


def test_garbled_label_file_is_a_bad_image_skipped_and_reported(tmp_path: Path) -> None:
    for name in ("good", "garbled", "binary", "words"):
        png(tmp_path / f"{name}.png")
    (tmp_path / "good.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "garbled.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n")
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    (tmp_path / "words.txt").write_text("cat 0.5 0.5 0.2 0.2\n")
    src = open_yolo(tmp_path, NAMES)
    names = [Path(src.describe(i)).stem for i in range(len(src))]
    garbled, binary, words = names.index("garbled"), names.index("binary"), names.index("words")
    with pytest.raises(BadImage) as e:
        src.boxes(garbled)
    assert str(e.value) == (f"{tmp_path / 'garbled.txt'}: line 2 is '1 0.5 0.5 0.2', not 'class x_center y_center width height' "
                            "(a whole class number and four numbers): fix or delete the line")  # fmt: skip
    with pytest.raises(BadImage, match="binary.txt: the label file is not text"):
        src.boxes(binary)
    assert src.label(words) == -1  # label() never raises
    with pytest.raises(BadImage, match="garbled.txt"):  # asked again: the same answer, counted once
        src.difficult(garbled)
    tally = src.scan()
    assert tally.images == 4 and len(tally.bad) == 3 and tally.fixes == BoxFixes(kept=1)
    assert tally.lines()[-1].startswith(f"3 label files cannot be read and their images are skipped; e.g. {tmp_path / 'garbled.txt'}: line 2")


def test_yolo_boxes_are_cleaned_and_counted(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("0 0.95 0.5 0.2 0.2\n3 0.5 0.5 0.1 0.1\n1 0.5 0.5 0 0.1\n-1 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n")
    src = open_yolo(tmp_path, NAMES)
    np.testing.assert_allclose(src.boxes(0), [[0, 0.925, 0.5, 0.15, 0.2], [2, 0.5, 0.5, 0.1, 0.1]], atol=1e-6)
    assert src.tally.fixes == BoxFixes(kept=2, clamped=1, empty=1, bad_class=2)
    assert pickle.loads(pickle.dumps(src)).boxes(0).shape == (2, 5)  # DataLoader workers get a copy


def test_yolo_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="does not exist: give a darknet image list"):
        open_yolo(tmp_path / "nope.txt", NAMES)
    with pytest.raises(CnnlabError, match="no images in image folder"):
        open_yolo(tmp_path, NAMES)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(CnnlabError, match="is empty: write one image path per line"):
        open_yolo(tmp_path / "empty.txt", NAMES)
    png(tmp_path / "a.png")
    with pytest.raises(CnnlabError, match="unknown label flavor 'yolo'"):
        open_yolo(tmp_path, NAMES, "yolo")  # type: ignore[arg-type]


def voc_xml(objects: list[tuple[str, int, int, int, int, int]], size: tuple[int, int] | None = (40, 20)) -> str:
    objs = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                   f"<xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>" for n, a, b, c, e, d in objects)  # fmt: skip
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>x.jpg</filename>{size_xml}{objs}</annotation>"


def make_voc(root: Path) -> Path:
    (root / "Annotations").mkdir(parents=True)
    ann = {
        "000001": voc_xml([("dog", 1, 1, 21, 11, 0), ("cat", 11, 5, 31, 15, 1)]),
        "000002": voc_xml([("person", 5, 5, 50, 15, 0), ("dog", 9, 9, 9, 15, 0)], size=None),  # past the edge; empty
        "000003": "<annotation><object><name>dog</name>",  # truncated
        "000004": voc_xml([("cat", 3, 4, 13, 14, 1)]),
    }
    for image_id, text in ann.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
        png(root / "JPEGImages" / f"{image_id}.jpg")
    sets = root / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("000001\n000002\n000003\n")
    (sets / "val.txt").write_text("000004\n")
    (sets / "dog_train.txt").write_text("000001  1\n")  # per-class lists are not splits
    return root


def test_voc_split_classes_difficult_and_pixels(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "VOC2007")
    src = open_voc(root, "train")
    assert src.classes == ["cat", "dog", "person"] and len(src) == 3
    # voc_label.py: centre (xmin + xmax) / 2 - 1, width xmax - xmin, over <size> 40 x 20
    np.testing.assert_allclose(src.boxes(0), [[1, 10 / 40, 5 / 20, 20 / 40, 10 / 20], [0, 20 / 40, 9 / 20, 20 / 40, 10 / 20]], atol=1e-6)
    assert src.difficult(0).tolist() == [False, True]
    # no <size>: the image's header gives 40 x 20; person runs past the right edge, the dog is empty
    np.testing.assert_allclose(src.boxes(1), [[2, (4 + 40) / 2 / 40, 9 / 20, 36 / 40, 10 / 20]], atol=1e-6)
    assert src.difficult(1).tolist() == [False]
    with pytest.raises(BadImage, match=r"000003\.xml: not valid XML"):
        src.boxes(2)
    assert src.label(0) == 1 and src.describe(0) == str(root / "JPEGImages" / "000001.jpg")
    tally = src.scan()
    assert tally.fixes == BoxFixes(kept=3, clamped=1, empty=1) and len(tally.bad) == 1
    val = open_voc(root, "val", classes=["person", "cat"])
    assert val.boxes(0)[:, 0].tolist() == [1.0] and val.difficult(0).tolist() == [True]
    with pytest.raises(CnnlabError, match=r"ImageSets/Main/test.txt: this VOC folder has the splits train, val; pick one"):
        open_voc(root, "test")
    with pytest.raises(CnnlabError, match="is not a PASCAL VOC folder"):
        open_voc(tmp_path, "train")


def test_voc_given_names_drop_other_classes(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "VOC")
    src = open_voc(root, "train", classes=["dog"])
    assert src.boxes(0)[:, 0].tolist() == [0.0] and src.difficult(0).tolist() == [False]
    assert src.tally.fixes == BoxFixes(kept=1, bad_class=1)


def test_bbox_csv_joined_with_class_folders(tmp_path: Path) -> None:
    images = tmp_path / "imagenet"
    png(images / "train" / "n01" / "n01_1.JPEG", (50, 25))
    png(images / "train" / "n01" / "n01_2.JPEG")
    png(images / "train" / "n02" / "n02_7.JPEG", (40, 20))
    png(images / "val" / "n02" / "n02_9.JPEG")
    csv = tmp_path / "boxes.csv"
    csv.write_text("filename,wnid,xmin,ymin,xmax,ymax\n"
                   "n01_1.JPEG,n01,5,5,30,20\nn01_1.JPEG,n99,0,0,10,10\nn02_7.JPEG,n02,30,0,50,20\n")  # fmt: skip
    src = open_bbox_csv(csv, str(images), "train")
    assert src.classes == ["n01", "n02"] and len(src) == 3
    np.testing.assert_allclose(src.boxes(0), [[0, 17.5 / 50, 12.5 / 25, 25 / 50, 15 / 25]], atol=1e-6)
    assert len(src.boxes(1)) == 0 and src.label(1) == -1
    np.testing.assert_allclose(src.boxes(2), [[1, 35 / 40, 0.5, 10 / 40, 1.0]], atol=1e-6)  # clamped at x = 40
    tally = src.scan()
    assert tally.fixes == BoxFixes(kept=2, clamped=1, bad_class=1) and tally.missing == 1
    assert tally.missing_examples == [f"{images / 'train' / 'n01' / 'n01_2.JPEG'}: no row for n01_2 in {csv}"]
    rel = tmp_path / "rel.csv"
    rel.write_text("filename,wnid,xmin,ymin,xmax,ymax\nn02_9.JPEG,n02,0.100000,0.200000,0.500000,1.000000\n")
    assert read_bbox_csv(rel).relative and not read_bbox_csv(csv).relative
    np.testing.assert_allclose(open_bbox_csv(rel, str(images), "val").boxes(0), [[1, 0.3, 0.6, 0.4, 0.8]], atol=1e-6)
    (tmp_path / "bad.csv").write_text("filename,xmin\nx,1\n")
    with pytest.raises(CnnlabError, match="bad.csv .*give a CSV written by `cnnlab data bbox`"):
        read_bbox_csv(tmp_path / "bad.csv")

