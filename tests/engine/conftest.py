"""Shared fixtures: the CLI run in-process or as a real process, and one tiny trained run."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cnnlab.cli import main

REPO = Path(__file__).resolve().parents[2]

# A run small enough for a test: LeNet-5 on 160 of scikit-learn's 8×8 digits, one epoch.
TINY = ["--model", "lenet5", "--data", "digits", "--epochs", "1", "--batch-size", "16", "--train-limit", "160",
        "--val-limit", "64", "--workers", "0", "--no-progress", "--lr", "0.05"]  # fmt: skip


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``cnnlab ARGS`` in this process; returns exit code and captured output."""

    def run(*args: str) -> Result:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def cnnlab_process(*args: str, cwd: Path | None = None, **kw) -> subprocess.Popen:
    """``python -m cnnlab ARGS`` as its own process (this checkout's package first on the path)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-m", "cnnlab", *map(str, args)], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def run_process(*args: str, timeout: float = 300) -> Result:
    p = cnnlab_process(*args)
    out, err = p.communicate(timeout=timeout)
    return Result(p.returncode, out, err)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished LeNet-5 run on digits (10 classes), shared by the tests that need a checkpoint."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out
