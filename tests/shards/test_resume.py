"""A training run from shards killed with SIGKILL mid-epoch resumes bit-identical to one never stopped."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import torch

from tests.engine.conftest import cnnlab_process, run_process

from .conftest import make_folders, write_split


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path: Path) -> None:
    folders = make_folders(tmp_path / "folders", per_class=40)
    write_split(folders, tmp_path / "shards" / "train", "train", shard_size=20)
    write_split(folders, tmp_path / "shards" / "val", "val")
    run = ["train", "--model", "lenet5", "--model-kwargs", "{drop_rate: 0.3}", "--data", f"shards:{tmp_path / 'shards'}",
           "--epochs", "2", "--batch-size", "16", "--workers", "0", "--no-progress", "--lr", "0.05",
           "--ema-decay", "0.9", "--ckpt-every", "2"]  # fmt: skip
    straight = run_process(*run, "--out", tmp_path / "straight")
    assert straight.code == 0, straight.err

    proc = cnnlab_process(*run, "--out", tmp_path / "killed")
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    try:
        while not last.exists():
            assert proc.poll() is None, f"run ended before its first checkpoint: {proc.communicate()[1]}"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    state = torch.load(last, weights_only=True)["train_state"]
    assert state["epoch"] == 0 and 0 < state["samples_drawn"] < 120, state  # really mid-epoch

    resumed = run_process("train", "--resume", tmp_path / "killed")
    assert resumed.code == 0, resumed.err
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["train_state"]["step"] == b["train_state"]["step"] == 2 * (120 // 16)
    for part in ("model", "ema"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resume"
