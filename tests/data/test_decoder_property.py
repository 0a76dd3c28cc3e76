"""Property test of the image decoder on real files from pip packages (scikit-image, scikit-learn):
seeded truncations, bit flips and header edits give either a valid image or the decoder's one "bad
image" error, never another exception, on every path — class folders, the shard writer and loader,
the fast crop decoder and predict."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import skimage
import sklearn
import torch

from cnnlab.data.datasets import open_split
from cnnlab.data.shards import format as fmt
from cnnlab.data.shards.loader import EncodedFiles, FastCropDataset
from cnnlab.data.shards.source import ShardSource
from cnnlab.data.shards.writer import write_shards
from cnnlab.data.sources.base import BadImage

SKIMAGE = Path(skimage.__file__).parent / "data"
SKLEARN = Path(sklearn.__file__).parent / "datasets" / "images"
ORIGINALS = [SKIMAGE / "rocket.jpg", SKLEARN / "china.jpg", SKIMAGE / "coins.png", SKIMAGE / "logo.png"]
PER_KIND = 7  # mutants per file and kind of damage: 4 files × 3 kinds × 7 = 84 images


def _mutants(data: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    out = []
    header = min(len(data), 600)  # JPEG SOI/APPn/DQT/SOF, PNG signature/IHDR/first chunks
    for i in range(PER_KIND):
        out.append((f"cut{i}", data[: rng.randrange(1, len(data))]))
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(flipped))
            flipped[pos] ^= 1 << rng.randrange(8)
        out.append((f"flip{i}", bytes(flipped)))
        edited = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            edited[rng.randrange(2, header)] = rng.randrange(256)  # sizes, lengths, markers, chunk types
        out.append((f"head{i}", bytes(edited)))
    return out


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One class folder per original file, holding its seeded mutants (and the intact file)."""
    root = tmp_path_factory.mktemp("damaged")
    rng = random.Random(13)
    for original in ORIGINALS:
        folder = root / original.stem
        folder.mkdir()
        data = original.read_bytes()
        (folder / f"intact{original.suffix}").write_bytes(data)
        for name, mutant in _mutants(data, rng):
            (folder / f"{name}{original.suffix}").write_bytes(mutant)
    return root


def _valid(img: torch.Tensor) -> bool:
    return img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] in (1, 3) and min(img.shape[1:]) > 0


@pytest.mark.filterwarnings("ignore")  # PIL warns about metadata it skips
def test_damaged_real_files_give_an_image_or_bad_image(damaged: Path, tmp_path: Path) -> None:
    src = open_split(str(damaged), "train")
    verdicts: dict[str, bool] = {}
    for i in range(len(src)):  # the folder path (training, valid, the shard writer's reads)
        try:
            verdicts[src.describe(i)] = _valid(src.load(i)) or pytest.fail(f"{src.describe(i)}: not a valid image")
        except BadImage:
            verdicts[src.describe(i)] = False
    good = sum(verdicts.values())
    assert 4 <= good < len(src), "the mutants should give both outcomes"
    assert all(verdicts[str(damaged / o.stem / f"intact{o.suffix}")] for o in ORIGINALS)

    # The fast loader on original files (the crop decoder, or the general decoder): an image or a reason.
    crops = FastCropDataset(EncodedFiles(src), (32, 32), 3, seed=0)
    for i in range(len(src)):
        img, label_or_reason, _ = crops[(0, i)]
        assert (img is not None) == verdicts[src.describe(i)], (src.describe(i), label_or_reason)

    # The shard writer skips and lists exactly the bad ones; the loader reads back every sample.
    settings = fmt.Settings(source=str(damaged), split="train", samples=len(src), classes=list(src.classes), resize=48,
                            quality=90, image_format="auto", shard_size=40, seed=0, boxes="")  # fmt: skip
    manifest = write_shards(src, tmp_path / "shards", settings, workers=1, progress=False, log=lambda s: None)
    assert manifest["samples"] == good and len(manifest["skipped"]) == len(src) - good
    shards = ShardSource(tmp_path / "shards")
    assert all(_valid(shards.load(i)) for i in range(len(shards)))

    # predict: the same verdicts through the Predictor (the path `cnnlab predict FILE…` takes).
    from cnnlab.engine.predict import Predictor
    from cnnlab.models import create_model

    model = create_model("lenet5", num_classes=len(src.classes))
    predictor = Predictor(model, src.classes, model.meta.preprocess, torch.device("cpu"))
    for path, ok in verdicts.items():
        try:
            pred = predictor(path, 1)
            assert ok and np.isfinite(pred.top[0][2]), path
        except BadImage:
            assert not ok, path
