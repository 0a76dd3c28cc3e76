"""A small class-folder dataset of real photo crops (JPEG), and its shards written once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from cnnlab.data.datasets import open_split
from cnnlab.data.shards import format as fmt
from cnnlab.data.shards.writer import write_shards

CLASSES = ["n01440764", "n01443537", "n01484850"]
PER_CLASS = 10  # train images per class; val has 3 per class


def make_folders(root: Path, corrupt: bool = False, per_class: int = PER_CLASS) -> Path:
    """root/{train,val}/<wnid>/*.jpg: crops of scikit-learn's two photos at assorted sizes."""
    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]  # (427, 640, 3)
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 3)):
        for c, wnid in enumerate(CLASSES):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(n):
                photo = photos[(c + i) % 2]
                h, w = int(rng.integers(90, 200)), int(rng.integers(90, 260))
                y, x = int(rng.integers(0, photo.shape[0] - h)), int(rng.integers(0, photo.shape[1] - w))
                Image.fromarray(photo[y : y + h, x : x + w]).save(d / f"{wnid}_{i}.JPEG", quality=92)
    if corrupt:
        (root / "train" / CLASSES[0] / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def settings_for(source, spec: str, split: str, **kw) -> fmt.Settings:
    base = dict(source=spec, split=split, samples=len(source), classes=list(source.classes), resize=128, quality=90,
                image_format="auto", shard_size=7, seed=0, boxes="")  # fmt: skip
    base.update(kw)
    return fmt.Settings(**base)


def write_split(folders: Path, out: Path, split: str = "train", **kw) -> dict:
    source = open_split(str(folders), split)
    return write_shards(source, out, settings_for(source, str(folders), split, **kw), workers=1, progress=False, log=lambda s: None)


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> Path:
    return make_folders(tmp_path_factory.mktemp("folders"))


@pytest.fixture(scope="session")
def shards(folders, tmp_path_factory) -> Path:
    """DIR with train/ (30 images in 5 shards of ≤ 7) and val/."""
    out = tmp_path_factory.mktemp("shards")
    write_split(folders, out / "train", "train")
    write_split(folders, out / "val", "val")
    return out
