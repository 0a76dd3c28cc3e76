"""Training under torchrun (gloo, 2 CPU processes of one thread each): the same result as one process,
exact restart after a killed worker, every validation image counted once, one-line failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.engine.conftest import REPO, run_process

# LeNet-5 on digits, fp32 (bf16 rounding would hide the comparison), no augmentation randomness
# beyond the per-sample seeds, SGD with momentum and a cosine schedule.
BASE = ["--model", "lenet5", "--data", "digits", "--train-limit", "256", "--workers", "0", "--no-progress",
        "--lr", "0.05", "--amp", "off", "--seed", "3"]  # fmt: skip


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def torchrun(*args: str, restarts: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", str(restarts), "-m", "cnnlab", "train", *map(str, args)]  # fmt: skip
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(p: subprocess.Popen, timeout: float = 400) -> str:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "two"
    _finish(torchrun(*BASE, "--epochs", "1", "--batch-size", "8", "--out", out))
    return out


def test_two_processes_equal_one_process_with_twice_the_batch(two_process_run: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    r = run_process("train", *BASE, "--epochs", "1", "--batch-size", "16", "--out", one)
    assert r.code == 0, r.err
    a, b = _weights(one), _weights(two_process_run)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)
    config = (two_process_run / "config.yaml").read_text()
    assert "world_size: 2" in config and "global_batch: 16" in config


def test_validation_report_counts_every_image_once(two_process_run: Path, tmp_path: Path) -> None:
    two = json.loads((two_process_run / "valid.json").read_text())
    r = run_process("valid", "-c", two_process_run / "checkpoints" / "last.pt", "--workers", "0", "--no-progress",
                    "--json", tmp_path / "one.json")  # fmt: skip
    assert r.code == 0, r.err
    one = json.loads((tmp_path / "one.json").read_text())
    assert two["count"] == one["count"] == sum(map(sum, one["confusion"]))
    assert two["confusion"] == one["confusion"] and two["support"] == one["support"]
    assert two["top1"] == pytest.approx(one["top1"]) and two["loss"] == pytest.approx(one["loss"], rel=1e-5)


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = _ppid(pid)
    return False


def _worker_pid(parent: int, rank: int, deadline: float) -> int:
    """The pid of the torchrun worker (a descendant of ``parent``) whose environment has ``RANK=rank``."""
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and int(proc.name) != parent and _descends_from(int(proc.name), parent):
                    if f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                        return int(proc.name)
            except (OSError, ValueError, IndexError):
                continue
        time.sleep(0.05)
    raise AssertionError(f"no worker with rank {rank}")


def test_killed_worker_is_restarted_and_resumes_bit_identical(tmp_path: Path) -> None:
    run = [*BASE, "--epochs", "2", "--batch-size", "8", "--ckpt-every", "3", "--model-kwargs", "{drop_rate: 0.3}"]
    straight = tmp_path / "straight"
    _finish(torchrun(*run, "--out", straight))

    killed = tmp_path / "killed"
    p = torchrun(*run, "--out", killed, restarts=1)
    deadline = time.monotonic() + 300
    last = killed / "checkpoints" / "last.pt"
    while not last.exists():
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1][-2000:]
        time.sleep(0.01)
    os.kill(_worker_pid(p.pid, 1, deadline), signal.SIGKILL)
    out = _finish(p)
    assert "resuming" in out
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["train_state"]["epoch"] == 2 and ckpt["world"] == 2
    a, b = _weights(straight), _weights(killed)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_failed_rank_is_one_line_per_rank(cli, tmp_path: Path) -> None:
    r = run_process("train", "--nproc", "2", *BASE, "--data", tmp_path / "missing", "--out", tmp_path / "run")
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert "Traceback" not in r.err and len(lines) == 4, r.err
    assert sum(line.startswith("rank ") and "does not exist" in line for line in lines) == 2
    assert sum(line.startswith("cnnlab train: rank ") for line in lines) == 2


def test_resume_at_another_world_size_starts_at_the_next_epoch(tmp_path: Path) -> None:
    from tests.engine.conftest import cnnlab_process

    run = tmp_path / "run"
    p = cnnlab_process("train", *BASE, "--epochs", "2", "--batch-size", "8", "--ckpt-every", "3", "--out", run)
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "last.pt").exists():
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=120)
    assert p.returncode == 143
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]["samples_drawn"] > 0
    r = run_process("train", "--resume", run, "--nproc", "2")
    assert r.code == 0, r.err
    assert "this run has 2: the rest of epoch 1 is skipped and training continues at the start of epoch 2" in r.out
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["train_state"]["epoch"] == 2 and ckpt["world"] == 2
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [2]
