"""The engine's parts seen from outside: progress output, SIGTERM, out of memory, BatchNorm across
processes, the task interface's guard rails."""

from __future__ import annotations

import io
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from cnnlab.engine import logger as logger_mod
from cnnlab.engine.launch import worker_argv
from tests.engine.conftest import REPO, TINY, cnnlab_process


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise(monkeypatch) -> None:
    monkeypatch.setattr(logger_mod, "PLAIN_EVERY", 0.0)
    plain = io.StringIO()
    p = logger_mod.Progress("epoch 1/2", 100, 0, "img", plain, enabled=True)
    for _ in range(4):
        p.update(25)
    p.close()
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue() and len(lines) == 4 and lines[-1].startswith("epoch 1/2  100/100 img")
    tty = _Terminal()
    p = logger_mod.Progress("epoch 1/2", 100, 0, "img", tty, enabled=True)
    p.update(50)
    p.close()
    assert "\r" in tty.getvalue()


def test_a_run_piped_to_a_file_writes_no_carriage_returns(tmp_path: Path) -> None:
    args = [a for a in TINY if a != "--no-progress"]
    p = cnnlab_process("train", *args, "--out", tmp_path / "run")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "\r" not in out + err


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--model", "lenet5", "--data", "digits", "--epochs", "3", "--batch-size", "8", "--workers", "0",
            "--no-progress", "--ckpt-every", "2"]  # fmt: skip
    p = cnnlab_process(*args, "--out", run)
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "last.pt").exists():
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert len(err.strip().splitlines()) == 1 and "stopped by SIGTERM" in err and f"--resume {run}" in err
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]
    assert state["epoch"] < 3
    p = cnnlab_process("train", "--resume", run, "--no-progress")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]["epoch"] == 3


def _limit_address_space() -> None:
    limit = 5 * 2**30  # torch's import alone reserves ~3.5 GB of address space
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_out_of_memory_names_the_batch_size_and_accumulation(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    args = ["train", "--model", "resnet18", "--data", "digits", "--batch-size", "256", "--train-limit", "256",
            "--val-limit", "16", "--epochs", "1", "--workers", "0", "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "cnnlab", *args], preexec_fn=_limit_address_space, env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "out of memory with --batch-size 256" in r.stderr and "--batch-size 128 --accum-steps 2" in r.stderr


def test_sync_bn_on_the_cpu_is_one_clear_line(cli, tmp_path: Path) -> None:
    r = cli("train", *TINY, "--sync-bn", "--out", tmp_path / "run")
    assert r.code == 2 and "--sync-bn needs CUDA" in r.err and len(r.err.splitlines()) == 1


def test_one_class_is_refused_before_training(cli, tmp_path: Path) -> None:
    from PIL import Image

    for i in range(4):
        (tmp_path / "data" / "only").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "data" / "only" / f"{i}.png")
    r = cli("train", "--model", "lenet5", "--data", tmp_path / "data", "--epochs", "1", "--workers", "0", "--out", tmp_path / "run")
    assert r.code == 2 and "at least 2 class" in r.err and len(r.err.splitlines()) == 1


def test_launcher_flags_are_not_passed_to_the_workers() -> None:
    argv = ["train", "--nproc", "2", "--lr", "0.1", "--max-restarts=1", "--epochs", "3"]
    assert worker_argv(argv) == ["train", "--lr", "0.1", "--epochs", "3"]


def test_batchnorm_statistics_are_averaged_across_processes(tmp_path: Path) -> None:
    code = """
import torch, torch.distributed as dist
from torch import nn
from cnnlab.engine import distributed
dist.init_process_group("gloo")
bn = nn.BatchNorm2d(3)
bn.running_mean.fill_(float(dist.get_rank() * 2 + 1))
bn.running_var.fill_(float(dist.get_rank() * 4 + 1))
bn.num_batches_tracked.fill_(dist.get_rank() + 5)
distributed.average_buffers(bn)
assert torch.allclose(bn.running_mean, torch.full((3,), 2.0)) and torch.allclose(bn.running_var, torch.full((3,), 3.0))
assert int(bn.num_batches_tracked) == dist.get_rank() + 5  # counts are not averaged
dist.destroy_process_group()
"""
    script = tmp_path / "bn.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
                       env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
