"""``--batch-size auto`` finds the largest micro-batch that fits and keeps the global batch
(``--global-batch``) with accumulation; ``--global-batch`` with a number sets the accumulation."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnlab.engine.autobatch import accum_for, largest_fitting
from cnnlab.errors import CnnlabError
from tests.engine.conftest import REPO, TINY


def _fits_up_to(limit: int, tried: list[int]):
    def fits(micro: int) -> bool:
        tried.append(micro)
        return micro <= limit

    return fits


def test_largest_fitting_halves_to_divisors_of_the_share() -> None:
    tried: list[int] = []
    assert largest_fitting(_fits_up_to(20, tried), 64) == (16, 32) and tried == [64, 32, 16]
    tried.clear()
    assert largest_fitting(_fits_up_to(30, tried), 100) == (25, 50) and tried == [100, 50, 25]
    tried.clear()
    assert largest_fitting(_fits_up_to(10, tried), 12) == (6, 12) and tried == [12, 6]  # 6 divides 12
    assert largest_fitting(_fits_up_to(200, []), 96) == (96, None)
    assert largest_fitting(_fits_up_to(0, []), 8) == (0, 1)


def test_global_batch_sets_the_accumulation() -> None:
    assert accum_for(64, 16, 2, 1) == 2 and accum_for(64, 16, 2, 2) == 2
    with pytest.raises(CnnlabError, match="not a multiple of 2 process"):
        accum_for(64, 24, 2, 1)
    with pytest.raises(CnnlabError, match="does not split evenly over 3 processes"):
        accum_for(64, 16, 3, 1)
    with pytest.raises(CnnlabError, match="means --accum-steps 2, not 4"):
        accum_for(64, 16, 2, 4)


def test_global_batch_with_a_number_and_auto_without_it(cli, tmp_path: Path) -> None:
    r = cli("train", *TINY, "--batch-size", "8", "--global-batch", "32", "--out", tmp_path / "run")
    assert r.code == 0, r.err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["batch_size"], saved["accum_steps"], saved["global_batch"]) == (8, 4, 32)
    assert "global batch 32 = 1 process x 8 x 4 accumulation" in r.out
    r = cli("train", *TINY, "--batch-size", "auto", "--out", tmp_path / "auto")
    assert r.code == 2 and "--batch-size auto keeps a global batch" in r.err and "--global-batch N" in r.err
    r = cli("train", *TINY, "--batch-size", "many", "--out", tmp_path / "bad")
    assert r.code == 2 and "must be int or 'auto', got 'many'" in r.err


def _limit_data() -> None:
    # RLIMIT_DATA counts the memory a process writes to (heap, anonymous maps), not the address space
    # it merely reserves (RLIMIT_AS: libraries, thread arenas), which a run grows after the probe.
    limit = int(1.55 * 2**30)  # here: a step of 16 ResNet-18 images at 224 px fits, one of 32 does not
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def test_auto_batch_under_a_memory_limit_picks_a_smaller_micro_batch_and_keeps_the_global_batch(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    args = ["train", "--model", "resnet18", "--data", "digits", "--batch-size", "auto", "--global-batch", "32",
            "--train-limit", "32", "--val-limit", "16", "--epochs", "1", "--workers", "0", "--no-progress",
            "--out", str(tmp_path / "run")]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "cnnlab", *args], preexec_fn=_limit_data, env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    # the limit sits near a step of 16 images: 16 fits in most runs, 8 when the run's memory happens
    # to land a little higher (seen once in a full suite on an Intel Xeon); either is a smaller
    # micro-batch whose accumulation keeps the global batch
    line = re.search(r"batch-size auto: micro-batch (\d+) fits \((\d+) did not\), (\d+) accumulation steps for the global batch 32", r.stdout)
    assert line is not None, r.stdout
    micro, failed, steps = map(int, line.groups())
    assert micro in (8, 16) and failed == 2 * micro and micro * steps == 32
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["batch_size"], saved["accum_steps"], saved["global_batch"]) == (micro, steps, 32)
