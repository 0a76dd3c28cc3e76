"""Small ILSVRC-style fixtures built here: per-class train tars, a flat val tar, a devkit whose
meta.mat has the real struct layout and whose ID order differs from sorted-wnid order, and images
with the traps found in the real archives (CMYK, PNG named .JPEG, grayscale, truncated)."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

# Devkit ID order on purpose unlike sorted order (as in the real devkit, where ID 1 is n02119789).
WNIDS_BY_ID = ["n02119789", "n01751748", "n01440764", "n01443537"]  # ILSVRC2012_ID = position + 1
SORTED = sorted(WNIDS_BY_ID)
COLORS = {"n01440764": (220, 30, 30), "n01443537": (30, 200, 30), "n01751748": (30, 30, 220), "n02119789": (220, 220, 30)}


def rgb_image(color: tuple[int, int, int], seed: int, size: tuple[int, int] = (40, 32)) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color)[None, None, :] + rng.integers(-20, 21, (size[1], size[0], 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def encode(im: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, quality=92) if fmt == "JPEG" else im.save(buf, format=fmt)
    return buf.getvalue()


def add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def add_symlink(tf: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    tf.addfile(info)


def write_meta_mat(path: Path, wnids_by_id: list[str]) -> None:
    """meta.mat as the devkit stores it: a (N, 1) struct array 'synsets' with these fields."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images"]
    n_leaf = len(wnids_by_id)
    rows = []
    for i, w in enumerate(wnids_by_id, 1):
        rows.append((i, w, f"words of {w}", f"gloss of {w}", 0, np.zeros((1, 0)), 0, 5))
    # Two internal synsets with IDs after the leaves, as in the real file; they are not classes.
    rows.append((n_leaf + 1, "n00015388", "animal, animate being", "a living organism", 2, np.array([[1, 2]]), 3, 0))
    rows.append((n_leaf + 2, "n00001740", "entity", "that which exists", 1, np.array([[n_leaf + 1]]), 9, 0))
    table = np.empty((len(rows), 1), dtype=[(f, "O") for f in fields])
    for r, row in enumerate(rows):
        for f, v in zip(fields, row):
            table[r, 0][f] = np.array([[v]]) if isinstance(v, int) else v
    scipy.io.savemat(path, {"synsets": table})


@dataclass
class Ilsvrc:
    train: Path
    val: Path
    devkit: Path
    expected_train: dict[str, str] = field(default_factory=dict)  # "wnid/name" -> kind
    expected_val: dict[str, str] = field(default_factory=dict)  # val file name -> wnid
    val_ids: list[int] = field(default_factory=list)


def build_ilsvrc(root: Path, per_class: int = 3) -> Ilsvrc:
    root.mkdir(parents=True, exist_ok=True)
    fx = Ilsvrc(root / "ILSVRC2012_img_train.tar", root / "ILSVRC2012_img_val.tar", root / "ILSVRC2012_devkit_t12.tar.gz")
    seed = 0
    with tarfile.open(fx.train, "w") as outer:
        for w in SORTED:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for k in range(per_class):
                    seed += 1
                    add_bytes(inner, f"{w}_{k}.JPEG", encode(rgb_image(COLORS[w], seed)))
                    fx.expected_train[f"{w}/{w}_{k}.JPEG"] = "ok"
                if w == "n01440764":
                    cmyk = rgb_image(COLORS[w], 100).convert("CMYK")
                    add_bytes(inner, f"{w}_cmyk.JPEG", encode(cmyk))
                    fx.expected_train[f"{w}/{w}_cmyk.JPEG"] = "converted_cmyk"
                    add_bytes(inner, f"{w}_png.JPEG", encode(rgb_image(COLORS[w], 101), "PNG"))
                    fx.expected_train[f"{w}/{w}_png.JPEG"] = "converted_png"
                    gray = rgb_image(COLORS[w], 102).convert("L")
                    add_bytes(inner, f"{w}_gray.JPEG", encode(gray))
                    fx.expected_train[f"{w}/{w}_gray.JPEG"] = "grayscale"
                    full = encode(rgb_image(COLORS[w], 103, (200, 160)))
                    add_bytes(inner, f"{w}_trunc.JPEG", full[: len(full) // 2])
                    fx.expected_train[f"{w}/{w}_trunc.JPEG"] = "corrupt"
                if w == "n01443537":
                    add_bytes(inner, f"../../{w}_escape.JPEG", encode(rgb_image(COLORS[w], 104)))
                    add_bytes(inner, f"/tmp/{w}_abs.JPEG", encode(rgb_image(COLORS[w], 105)))
                    add_symlink(inner, f"{w}_link.JPEG", "/etc/passwd")
            add_bytes(outer, f"{w}.tar", buf.getvalue())
    # Val: 8 images whose ground-truth IDs are deliberately not in sorted-wnid order.
    fx.val_ids = [2, 1, 4, 3, 2, 3, 1, 4]
    with tarfile.open(fx.val, "w") as tf:
        for i, gid in enumerate(fx.val_ids, 1):
            w = WNIDS_BY_ID[gid - 1]
            name = f"ILSVRC2012_val_{i:08d}.JPEG"
            add_bytes(tf, name, encode(rgb_image(COLORS[w], 200 + i)))
            fx.expected_val[name] = w
        add_bytes(tf, "../ILSVRC2012_val_00000009.JPEG", encode(rgb_image((0, 0, 0), 300)))
    meta = root / "meta.mat"
    write_meta_mat(meta, WNIDS_BY_ID)
    gt = "".join(f"{g}\n" for g in fx.val_ids).encode()
    with tarfile.open(fx.devkit, "w:gz") as tf:
        add_bytes(tf, "ILSVRC2012_devkit_t12/data/meta.mat", meta.read_bytes())
        add_bytes(tf, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", gt)
        add_bytes(tf, "ILSVRC2012_devkit_t12/readme.txt", b"fixture\n")
    return fx
