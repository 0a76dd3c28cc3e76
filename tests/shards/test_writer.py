"""Writing shards: contents, WebDataset compatibility, determinism, resume after a kill, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds

from cnnlab.data.shards import ShardSource
from cnnlab.errors import CnnlabError

from .conftest import CLASSES, PER_CLASS, make_folders, write_split

REPO = Path(__file__).resolve().parents[2]


def tar_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.suffix in (".tar",) or p.name.endswith(".idx.json")}


def test_manifest_counts_and_webdataset_reads_every_sample(shards, folders):
    manifest = json.loads((shards / "train" / "manifest.json").read_text())
    assert manifest["classes"] == CLASSES
    assert manifest["samples"] == 3 * PER_CLASS
    assert [s["samples"] for s in manifest["shards"]] == [7, 7, 7, 7, 2]
    assert manifest["class_counts"] == {c: PER_CLASS for c in CLASSES}
    urls = [str(shards / "train" / s["file"]) for s in manifest["shards"]]
    seen = []
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("rgb8"):
        meta = sample["json"]
        assert int(sample["cls"]) == meta["label"] == CLASSES.index(meta["class"])
        # The label is the class folder the original came from, and the stored image is resized.
        assert Path(meta["original"]).parent.name == meta["class"]
        assert min(sample["jpg"].shape[:2]) <= 128 and sample["jpg"].shape[2] == 3
        seen.append(meta["original"])
    assert sorted(seen) == sorted(str(p) for p in (folders / "train").rglob("*.JPEG"))


def test_same_input_same_bytes(folders, tmp_path):
    write_split(folders, tmp_path / "a")
    write_split(folders, tmp_path / "b")
    a, b = tar_bytes(tmp_path / "a"), tar_bytes(tmp_path / "b")
    assert a and a == b


_KILLER = """
import os, sys
from cnnlab.data.shards import fields
from tests.shards.conftest import write_split
from pathlib import Path
calls = 0
encode = fields.ImageField.encode
def dying_encode(self, img):
    global calls
    calls += 1
    if calls == 10:  # the second shard is half written
        os.kill(os.getpid(), 9)
    return encode(self, img)
fields.ImageField.encode = dying_encode
write_split(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_killed_writer_resumes_to_identical_shards(folders, tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(folders), str(out)], env=env, cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (out / "train-000000.idx.json").is_file()  # first shard finished
    assert list(out.glob(".train-000001.tar.*.tmp")) and not (out / "train-000001.tar").exists()  # hidden temp name
    assert not (out / "manifest.json").exists()
    with pytest.raises(CnnlabError, match="did not finish"):
        ShardSource(out)
    write_split(folders, out)  # the same command again
    write_split(folders, tmp_path / "clean")
    assert tar_bytes(out) == tar_bytes(tmp_path / "clean")
    assert not list(out.glob(".*.tmp"))  # the killed run's temp file is cleared on resume
    assert len(ShardSource(out)) == 3 * PER_CLASS


def test_refuses_other_settings_and_foreign_folders(folders, tmp_path):
    write_split(folders, tmp_path / "s")
    with pytest.raises(CnnlabError, match=r"other data or settings \(quality 90 → 80\).*another --out"):
        write_split(folders, tmp_path / "s", quality=80)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(CnnlabError, match="holds other files"):
        write_split(folders, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_unreadable_source_images_are_skipped_and_listed(tmp_path):
    folders = make_folders(tmp_path / "f", corrupt=True)
    manifest = write_split(folders, tmp_path / "s")
    assert manifest["samples"] == 3 * PER_CLASS
    assert len(manifest["skipped"]) == 1 and "broken.JPEG" in manifest["skipped"][0]


def test_small_images_are_stored_losslessly(tmp_path):
    from cnnlab.data.datasets import open_split

    from .conftest import settings_for
    from cnnlab.data.shards.writer import write_shards

    source = open_split("digits", "val")
    write_shards(source, tmp_path / "d", settings_for(source, "digits", "val", shard_size=100), progress=False, log=lambda s: None)
    shards = ShardSource(tmp_path / "d")
    assert len(shards) == len(source)
    key = int(shards.keys[5])  # keys are positions in the writer's seeded order
    import numpy as np

    order = np.random.default_rng(0).permutation(len(source))
    assert (shards.load(5) == source.load(int(order[key]))).all()


def test_boxes_are_stored_scaled_to_the_stored_image(folders, tmp_path):
    from PIL import Image

    target = sorted((folders / "train" / CLASSES[1]).iterdir())[0]
    width, height = Image.open(target).size
    csv = tmp_path / "boxes.csv"
    csv.write_text(f"filename,wnid,xmin,ymin,xmax,ymax\n{target.stem}.xml,{CLASSES[1]},10,20,{width},{height}\n")
    out = tmp_path / "s"
    manifest = write_split(folders, out, boxes=str(csv), resize=64)
    urls = [str(out / s["file"]) for s in manifest["shards"]]
    metas = {m["original"]: m for m in (s["json"] for s in wds.WebDataset(urls, shardshuffle=False).decode())}
    meta = metas[str(target)]
    factor = 64 / min(width, height)
    assert meta["original_size"] == [width, height]
    assert meta["boxes"] == [[round(v * factor, 2) for v in (10, 20, width, height)]]
    assert sum(bool(m["boxes"]) for m in metas.values()) == 1
