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
    assert "Traceback" not in r.err, r.err
    # Each rank that got to say why says it in one line; torchrun stops the others as soon as one
    # fails, so on a busy machine a rank can be killed before (or just after) its own line.
    said = sum(line.startswith("rank ") and "does not exist" in line for line in lines)
    summaries = [line for line in lines if line.startswith("cnnlab train: rank ")]
    assert len(summaries) == 2 and 1 <= said <= 2 and len(lines) == said + 2, r.err
    exited = sum(line.endswith("exited with code 2 (its own message is above)") for line in summaries)
    assert 1 <= exited <= said and sum(line.endswith("was killed by SIGTERM") for line in summaries) == 2 - exited, r.err


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


def _bad_batch_folders(root: Path, batch: int) -> list[str]:
    """Class folders of small PNGs where rank 1's whole first micro-batch (of ``batch``) is unreadable;
    the names of the bad files."""
    import numpy as np
    from PIL import Image

    from cnnlab.data.datasets import open_split
    from cnnlab.data.loader import ResumableSampler

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 16), ("val", 4)):
        for c, shade in (("dark", 40), ("light", 210)):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(shade + rng.integers(-30, 30, (32, 32)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i:02d}.png")
    source = open_split(str(root), "train", seed=3)
    order = ResumableSampler(len(source), 3, True, rank=1, world=2, drop_last=True).indices()
    bad = [source.paths[i] for i in order[:batch]]
    for rel in bad:
        (Path(source.root) / rel).write_text("not an image\n")
    return bad


def _kill_run(p: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (each in a session of its own, so not in torchrun's group)."""
    workers = [int(q.name) for q in Path("/proc").iterdir() if q.name.isdigit() and int(q.name) != p.pid and _alive_child(int(q.name), p.pid)]
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()


def _alive_child(pid: int, parent: int) -> bool:
    try:
        return _descends_from(pid, parent)
    except (OSError, ValueError, IndexError):
        return False


def test_a_rank_whose_whole_micro_batch_is_bad_still_takes_part_in_the_step(tmp_path: Path) -> None:
    """Rank 1's first micro-batch is all unreadable: it must still join the gradient all-reduce (no hang,
    no ranks a step apart), and the bad images are counted and reported."""
    bad = _bad_batch_folders(tmp_path / "data", 4)
    out = tmp_path / "run"
    args = [*BASE, "--data", tmp_path / "data", "--train-limit", "0", "--epochs", "1", "--batch-size", "4",
            "--max-bad-fraction", "0.5", "--out", out]  # fmt: skip
    p = torchrun(*args)
    try:
        _finish(p, timeout=240)  # before the fix: rank 0 waits in an all-reduce rank 1 never joins
    except subprocess.TimeoutExpired:
        _kill_run(p)
        pytest.fail("the two ranks hung: one skipped a step the other took")
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(Path(b.split(":")[0]).name for b in summary["bad_images"]) == sorted(Path(b).name for b in bad)
    assert len(summary["bad_images"]) == 4
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["train_state"]["step"] == 32 // (2 * 4)  # every rank took every step
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["train_loss"] == record["train_loss"] and record["train_loss"] > 0  # finite, from the good images
