"""The fast loader: every sample once across workers and ranks, determinism, resume, bad samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cnnlab.data.loader import BadImageLog
from cnnlab.data.shards import ShardSampler, ShardSource, make_shard_loader
from cnnlab.errors import CnnlabError

from .conftest import CLASSES, PER_CLASS

SIZE = (48, 40)


def drain(loader) -> tuple[list, list[torch.Tensor], list[str]]:
    indices, images, bad = [], [], []
    for batch in loader:
        assert batch.images.dtype == torch.uint8 and batch.images.shape[1:] == (3, *SIZE)
        indices += batch.indices.tolist()
        images.append(batch.images)
        bad += batch.bad
        # Each label is the one its sample was written with (the class folder of the original).
        for i, label in zip(batch.indices.tolist(), batch.labels.tolist()):
            assert label == loader.dataset.source.label(i)
    return indices, images, bad


def original_class(source: ShardSource, index: int) -> str:
    """The class folder of the file this sample came from, read from the tar's JSON sidecar."""
    import tarfile

    with tarfile.open(source.root / source.files[int(source.shard[index])]) as tar:
        meta = json.load(tar.extractfile(f"{source.keys[index]}.json"))
    return Path(meta["original"]).parent.name


@pytest.mark.parametrize("workers", [1, 2])
def test_every_sample_exactly_once_with_its_label(shards, workers):
    source = ShardSource(shards / "train")
    loader = make_shard_loader(source, SIZE, 3, 4, seed=1, workers=workers, drop_last=False, rank=0, world=1)
    indices, _, bad = drain(loader)
    assert sorted(indices) == list(range(3 * PER_CLASS)) and not bad
    assert all(CLASSES[source.label(i)] == original_class(source, i) for i in range(len(source)))


def test_two_ranks_split_shards_without_overlap(shards):
    source = ShardSource(shards / "train")  # 5 shards: 7, 7, 7, 7, 2 samples
    per_rank = []
    for rank in (0, 1):
        loader = make_shard_loader(source, SIZE, 3, 4, seed=3, workers=0, drop_last=False, rank=rank, world=2)
        per_rank.append(drain(loader)[0])
    a, b = per_rank
    assert not set(a) & set(b) and sorted(a + b) == list(range(len(source)))
    shards_a, shards_b = {int(source.shard[i]) for i in a}, {int(source.shard[i]) for i in b}
    assert not shards_a & shards_b  # a shard is read by one rank only
    # drop_last (training): both ranks take the same number of samples, from their own shards.
    lengths = [len(ShardSampler(source.starts, 3, True, r, 2, drop_last=True)) for r in (0, 1)]
    assert lengths[0] == lengths[1] == min(len(a), len(b))
    with pytest.raises(CnnlabError, match="smaller --shard-size"):
        ShardSampler(source.starts, 0, True, 0, 6)


def test_same_seed_same_batches_whatever_the_workers(shards):
    source = ShardSource(shards / "train")

    def run(seed: int, workers: int, epoch: int = 0):
        loader = make_shard_loader(source, SIZE, 3, 4, seed=seed, workers=workers, drop_last=True, rank=0, world=1)
        loader.sampler.set_epoch(epoch)
        indices, images, _ = drain(loader)
        return indices, torch.cat(images)

    i0, x0 = run(5, 0)
    i2, x2 = run(5, 2)
    assert i0 == i2 and torch.equal(x0, x2)
    i_other, x_other = run(6, 0)
    assert i_other != i0
    i_e1, _ = run(5, 0, epoch=1)
    assert i_e1 != i0  # a new order each epoch


def test_resume_mid_epoch_replays_the_remaining_batches(shards):
    source = ShardSource(shards / "train")
    loader = make_shard_loader(source, SIZE, 3, 4, seed=2, workers=0, drop_last=True, rank=0, world=1)
    loader.sampler.set_epoch(3)
    full = [(b.indices, b.images) for b in loader]
    loader.sampler.set_epoch(3, start=8)  # two batches of 4 already consumed
    rest = [(b.indices, b.images) for b in loader]
    assert len(rest) == len(full) - 2
    for (ia, xa), (ib, xb) in zip(full[2:], rest):
        assert torch.equal(ia, ib) and torch.equal(xa, xb)


def test_corrupt_sample_inside_a_shard_is_skipped_and_counted(shards, tmp_path):
    copy = tmp_path / "train"
    shutil.copytree(shards / "train", copy)
    source = ShardSource(copy)
    victim = 9
    with open(copy / source.files[int(source.shard[victim])], "r+b") as f:
        f.seek(int(source.offset[victim]) + 2)  # keep SOI, destroy the headers and the scan
        f.write(b"\x00" * (int(source.size[victim]) - 4))
    loader = make_shard_loader(ShardSource(copy), SIZE, 3, 4, seed=0, workers=0, drop_last=False, rank=0, world=1)
    log = BadImageLog(max_fraction=0.5)
    indices = []
    for batch in loader:
        log.update(batch)
        indices += batch.indices.tolist()
    assert sorted(indices) == [i for i in range(len(source)) if i != victim]
    assert len(log.bad) == 1 and source.keys[victim] in next(iter(log.bad))
    assert "skipped 1 unreadable image(s) of 30" in log.report()
    # The general path (evaluation) reports it the same way.
    from cnnlab.data.sources.base import BadImage

    with pytest.raises(BadImage):
        ShardSource(copy).load(victim)


def test_open_files_are_bounded(shards, monkeypatch):
    from cnnlab.data.shards import source as source_mod

    monkeypatch.setattr(source_mod, "MAX_OPEN", 2)
    source = ShardSource(shards / "train")  # 5 shards
    fresh = ShardSource(shards / "train")
    for i in reversed(range(len(source))):
        assert source.encoded(i) == fresh.encoded(i)  # the same bytes whatever was closed in between
        assert len(source._fds) <= 2


def test_grey_models_get_one_channel(shards):
    source = ShardSource(shards / "train")
    loader = make_shard_loader(source, (32, 32), 1, 8, seed=0, workers=0, drop_last=False, rank=0, world=1)
    batch = next(iter(loader))
    assert batch.images.shape == (8, 1, 32, 32) and batch.images.dtype == torch.uint8


def test_files_that_need_the_general_decoder(tmp_path):
    """Original files: Exif-rotated, CMYK and PNG-named-JPEG images come out right, not skipped."""
    import numpy as np
    from PIL import Image

    from cnnlab.data.shards.loader import EncodedFiles, FastCropDataset
    from cnnlab.data.sources.folders import FolderSource

    tall = Image.fromarray(np.tile(np.linspace(0, 255, 60, dtype=np.uint8)[:, None, None], (1, 90, 3)))  # 90 × 60
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90°: 60 wide × 90 tall
    tall.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    tall.convert("CMYK").save(tmp_path / "cmyk.jpg")
    tall.save(tmp_path / "png.jpg", format="PNG")
    folder = FolderSource(tmp_path, ["rotated.jpg", "cmyk.jpg", "png.jpg"], [0, 0, 0], ["a"])
    ds = FastCropDataset(EncodedFiles(folder), (16, 16), 3, seed=0, scale=(1.0, 1.0), ratio=(0.1, 10.0), hflip=0.0)
    images = [ds[(0, i)][0] for i in range(3)]
    assert all(img is not None and img.shape == (3, 16, 16) for img in images)
    # The gradient runs down the stored image; after the Exif rotation it runs across.
    rotated = images[0].float()
    assert (rotated[:, :, -1] - rotated[:, :, 0]).abs().mean() > 100 and (rotated[:, -1] - rotated[:, 0]).abs().mean() < 20


@pytest.mark.parametrize("channels", [3, 1])
def test_batch_fetch_equals_the_samples_one_by_one(shards, tmp_path, channels):
    """``__getitems__`` (what the DataLoader calls) writes each crop into its slot of one batch: the
    same pixels, labels and order as ``__getitem__`` sample by sample, a bad sample dropped and named."""
    from cnnlab.data.shards.loader import FastCropDataset

    copy = tmp_path / "train"
    shutil.copytree(shards / "train", copy)
    source = ShardSource(copy)
    victim = 5
    with open(copy / source.files[int(source.shard[victim])], "r+b") as f:
        f.seek(int(source.offset[victim]) + 2)
        f.write(b"\x00" * (int(source.size[victim]) - 4))
    ds = FastCropDataset(ShardSource(copy), SIZE, channels, seed=3)
    keys = [(2, i) for i in (7, victim, 0, 12, 3)]
    batch = ds.__getitems__(keys)
    singles = [ds[k] for k in keys if k[1] != victim]
    assert batch.size == 5 and len(batch.bad) == 1 and source.keys[victim] in batch.bad[0]
    assert batch.indices.tolist() == [7, 0, 12, 3] and batch.labels.tolist() == [s[1] for s in singles]
    assert batch.images.shape == (4, channels, *SIZE) and batch.images.dtype == torch.uint8
    assert torch.equal(batch.images, torch.stack([s[0] for s in singles]))


def test_worker_batches_reuse_slots_and_stay_intact_when_kept(shards, monkeypatch):
    """Workers write batches into shared slots they reuse (cnnlab.data.batch_slots): the batches equal
    those made in-process; a slot comes free once its batch is dropped (so few are mapped); and
    batches kept past the slot limit stay intact while the workers go on (one-off buffers then)."""
    from cnnlab.data import batch_slots

    monkeypatch.setattr(batch_slots, "MAX_SLOTS", 2)  # forked workers inherit it
    monkeypatch.setattr(batch_slots, "_mapped", {})
    source = ShardSource(shards / "train")

    def loader(workers):
        return make_shard_loader(source, SIZE, 3, 2, workers=workers, seed=4, drop_last=False)

    expected = [(b.images.clone(), b.indices.clone(), b.labels.clone()) for b in loader(0)]
    assert len(expected) > 2 * 2 * batch_slots.MAX_SLOTS  # more batches than both workers' slots
    kept = list(loader(2))  # every batch held, none cloned
    assert [b.indices.tolist() for b in kept] == [e[1].tolist() for e in expected]
    assert all(torch.equal(b.labels, e[2]) and b.labels.dtype == torch.int64 for b, e in zip(kept, expected))
    assert all(torch.equal(b.images, e[0]) for b, e in zip(kept, expected))
    del kept
    batch_slots._mapped.clear()
    # enough slots for the prefetched batches (4 a worker) and the one held here, fewer than the batches
    monkeypatch.setattr(batch_slots, "MAX_SLOTS", 6)
    assert len(expected) > 2 * batch_slots.MAX_SLOTS
    for got, (images, _, _) in zip(loader(2), expected):  # dropped as it goes: the slots come back
        assert torch.equal(got.images, images) and got.images.is_contiguous(memory_format=torch.channels_last)
        # every batch came in a slot, so slots were reused; none in a one-off buffer
        assert any(got.images.data_ptr() == s.data_ptr() + batch_slots.HEADER for s in batch_slots._mapped.values())
