"""Exact resume: a run killed with SIGKILL mid-epoch and resumed ends bit-identical to one never stopped."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import torch

from tests.engine.conftest import cnnlab_process, run_process

# Two epochs of LeNet-5 (with dropout, which draws from the global RNG) on digits: augmented,
# shuffled batches, momentum, a cosine schedule and EMA, checkpointing every 3 optimizer steps so
# there is a mid-epoch resume point.
RUN = ["train", "--model", "lenet5", "--model-kwargs", "{drop_rate: 0.3}", "--data", "digits", "--epochs", "2", "--batch-size", "16", "--train-limit", "640",
       "--val-limit", "64", "--workers", "0", "--no-progress", "--lr", "0.05", "--ema-decay", "0.9",
       "--rotation", "10", "--translate", "0.1", "--ckpt-every", "3"]  # fmt: skip


def _final_state(run_dir: Path) -> dict:
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return {"model": ckpt["model"], "ema": ckpt["ema"], "optimizer": ckpt["optimizer"]["state"], "step": ckpt["train_state"]["step"]}


def _kill_mid_epoch(run_dir: Path) -> dict:
    """Start the run, SIGKILL it as soon as a mid-epoch checkpoint exists; return that checkpoint's state."""
    proc = cnnlab_process(*RUN, "--out", run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    try:
        while not last.exists():
            assert proc.poll() is None, f"run ended before its first checkpoint: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return torch.load(last, weights_only=True)["train_state"]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path: Path) -> None:
    straight = run_process(*RUN, "--out", tmp_path / "straight")
    assert straight.code == 0, straight.err

    state = _kill_mid_epoch(tmp_path / "killed")
    assert state["epoch"] == 0 and 0 < state["samples_drawn"] < 640, state  # really mid-epoch
    resumed = run_process("train", "--resume", tmp_path / "killed")
    assert resumed.code == 0, resumed.err
    assert f"resuming {tmp_path / 'killed'} at epoch 1, sample {state['samples_drawn']}" in resumed.out

    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "killed")
    assert a["step"] == b["step"] == 2 * (640 // 16)
    for part in ("model", "ema"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resume"
    for pid, st in a["optimizer"].items():
        assert torch.equal(st["momentum_buffer"], b["optimizer"][pid]["momentum_buffer"])
    # The resumed run's per-epoch log is the uninterrupted one's (no epoch twice), bar the timings.
    def log(run: str) -> list[dict]:
        rows = [json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_second")} for r in rows]

    assert log("straight") == log("killed")


def test_resume_errors_are_one_line(cli, tmp_path: Path) -> None:
    r = cli("train", "--resume", tmp_path)
    assert r.code == 2 and "not a run directory" in r.err and len(r.err.splitlines()) == 1
    recipe = tmp_path / "my.yaml"
    recipe.write_text("epochs: 4\nsched: step\n")
    r = cli("train", "--resume", tmp_path, "--config", recipe)  # its keys were silently ignored
    assert r.code == 2 and "--config with --resume" in r.err and "--epochs N" in r.err and len(r.err.splitlines()) == 1
