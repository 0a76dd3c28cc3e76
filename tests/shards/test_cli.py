"""End to end through the command line: write shards, train from them, evaluate and predict on them."""

from __future__ import annotations

import json

from cnnlab.cli import main

from .conftest import CLASSES, PER_CLASS


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_write_train_valid_predict_from_shards(folders, tmp_path, capsys, monkeypatch):
    from cnnlab.data.shards.loader import FastCropDataset

    fast_samples = []
    crop = FastCropDataset.crop  # what batches (__getitems__) and single samples (__getitem__) both call
    monkeypatch.setattr(FastCropDataset, "crop", lambda self, epoch, index, out=None: fast_samples.append((epoch, index)) or crop(self, epoch, index, out))

    out = tmp_path / "shards"
    code, stdout, err = run(capsys, "data", "shards", folders, "--out", out, "--shard-size", "8", "--workers", "2", "--no-progress")
    assert code == 0, err
    assert f"{3 * PER_CLASS} samples in 4 shards" in stdout and "--data shards:" in stdout
    # Re-running the same command is a no-op resume, not an error; other settings are refused.
    code, stdout, _ = run(capsys, "data", "shards", folders, "--out", out, "--shard-size", "8", "--no-progress")
    assert code == 0 and "resuming, 4 of 4 shards already written" in stdout
    code, _, err = run(capsys, "data", "shards", folders, "--out", out, "--shard-size", "9", "--no-progress")
    assert code == 2 and "shard_size 8 → 9" in err and len(err.strip().splitlines()) == 1

    runs = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--model", "lenet5", "--data", f"shards:{out}", "--epochs", "1", "--batch-size", "8",
                            "--workers", "0", "--no-progress", "--out", runs, "--lr", "0.01")  # fmt: skip
    assert code == 0, err
    summary = json.loads((runs / "summary.json").read_text())
    assert summary["train_images"] == 3 * PER_CLASS and summary["val_images"] == 9 and not summary["bad_images"]
    metrics = [json.loads(line) for line in (runs / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == (3 * PER_CLASS) // 8  # three optimizer steps from shards
    # every sample through the fused decode-and-crop loader: 24 trained on, 6 of the dropped last batch read for bad ones
    assert len(fast_samples) == 3 * PER_CLASS == 30 and len(set(fast_samples)) == 30

    code, stdout, err = run(capsys, "valid", "-c", runs, "--data", f"shards:{out}")
    assert code == 0, err
    assert "top-1" in stdout.lower() or "top1" in stdout.lower()

    code, stdout, err = run(capsys, "predict", "-c", runs, f"shards:{out}", "--format", "json")
    assert code == 0, err
    preds = json.loads(stdout)
    assert len(preds) == 9 and all(p["top"][0]["label"] in CLASSES for p in preds)
    assert all(".tar:" in p["path"] for p in preds)


def test_missing_shards_is_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--model", "lenet5", "--data", f"shards:{tmp_path / 'nope'}", "--epochs", "1")
    assert code == 2 and "does not exist" in err and "cnnlab data shards" in err and len(err.strip().splitlines()) == 1


def test_a_foreign_split_folder_is_refused_before_any_split_is_written(folders, tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "val").mkdir(parents=True)
    (out / "val" / "notes.txt").write_text("keep me")
    code, _, err = run(capsys, "data", "shards", folders, "--out", out, "--no-progress")
    assert code == 2 and "holds other files" in err and len(err.strip().splitlines()) == 1
    assert not (out / "train").exists()  # train was written first, then val refused: the folder left half-filled
    assert (out / "val" / "notes.txt").read_text() == "keep me"
