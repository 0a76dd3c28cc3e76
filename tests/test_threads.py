"""cnnlab.threads: the thread count and OpenMP wait policy it picks, and where they reach."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cnnlab import threads
from cnnlab.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent


def test_nothing_set_means_every_core_with_sleeping_waits() -> None:
    d = threads.decide({}, cpus=2)
    assert (d.threads, d.source, d.wait_policy) == (2, "cores", "PASSIVE")
    assert d.env == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}


def test_the_users_omp_num_threads_is_kept_as_it_is() -> None:
    d = threads.decide({"OMP_NUM_THREADS": "1"}, cpus=8)
    assert (d.threads, d.source) == (1, "OMP_NUM_THREADS")
    assert "OMP_NUM_THREADS" not in d.env  # never rewritten, whatever its form
    assert threads.decide({"OMP_NUM_THREADS": "4,2"}, cpus=8).threads == 4  # a nested list: its first level


def test_threads_flag_wins_over_the_environment() -> None:
    d = threads.decide({"OMP_NUM_THREADS": "1"}, cpus=8, flag=3)
    assert (d.threads, d.source, d.env["OMP_NUM_THREADS"]) == (3, "--threads", "3")


def test_the_users_wait_policy_or_spin_count_is_not_replaced() -> None:
    d = threads.decide({"OMP_WAIT_POLICY": "active"}, cpus=2)
    assert d.wait_policy == "ACTIVE" and "OMP_WAIT_POLICY" not in d.env
    d = threads.decide({"GOMP_SPINCOUNT": "10000"}, cpus=2)
    assert d.wait_policy == "GOMP_SPINCOUNT=10000" and "OMP_WAIT_POLICY" not in d.env


def test_local_ranks_share_the_cores() -> None:
    # a launcher that leaves OMP_NUM_THREADS unset: each of LOCAL_WORLD_SIZE ranks gets its share
    assert threads.decide({"LOCAL_WORLD_SIZE": "2"}, cpus=8).threads == 4
    assert threads.decide({"LOCAL_WORLD_SIZE": "4"}, cpus=2).threads == 1
    # cnnlab train --nproc N: cores / N per rank, unless the user chose
    assert threads.for_ranks(2, threads.decide({}, cpus=2)) == 1
    assert threads.for_ranks(3, threads.decide({}, cpus=8)) == 2
    assert threads.for_ranks(2, threads.decide({"OMP_NUM_THREADS": "2"}, cpus=2)) is None
    assert threads.for_ranks(2, threads.decide({}, cpus=2, flag=2)) is None


def test_a_cgroup_cpu_quota_caps_the_cores(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core
    assert threads.cpus_available(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cpus_available(tmp_path) == affinity
    assert threads.cpus_available(tmp_path / "absent") == affinity


def test_dataloader_workers_compute_with_one_thread() -> None:
    from cnnlab.data.loader import batch_loader

    loader = batch_loader(list(range(4)), range(4), 2, workers=1, drop_last=False, pin_memory=False, seed=0)
    assert loader.worker_init_fn is threads.worker_init
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        threads.worker_init(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_with_torch_already_loaded_only_the_flag_changes_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "_decision", None)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert threads.apply(None, announce=False).threads == 1  # a library user's own setting stays
        assert threads.apply(2, announce=False).threads == 2
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(threads, "_decision", threads.decide({}, cpus=2))  # as if set before torch loaded
        assert threads.apply(None, announce=False).wait_policy == "PASSIVE"
    finally:
        torch.set_num_threads(before)


def test_commands_that_run_a_network_take_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "_decision", None)
    parser = build_parser()
    for argv in (["train"], ["valid", "-c", "RUN"], ["predict", "-c", "RUN", "x.png"], ["darknet", "classifier", "predict", "d", "c", "w"]):
        args, extras = parser.parse_known_args([*argv, "--threads", "3"])
        assert args.threads == 3 and not extras, argv
    assert main(["train", "--threads", "0"]) == 2  # one line, not a traceback


def test_train_with_omp_num_threads_1_runs_and_records_one_thread(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "cnnlab", "train", "--config", "lenet5_mnist5k", "--epochs", "1", "--train-limit", "128",
           "--val-limit", "64", "--workers", "0", "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "threads:" not in proc.stderr  # the user's choice is not announced
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["threads"]
    assert saved == {"threads": 1, "source": "OMP_NUM_THREADS", "cpus": threads.cpus_available(), "wait_policy": "PASSIVE"}


class _Digits:
    """Four 1x4x4 images whose transform notes the thread count it ran on."""

    def __len__(self) -> int:
        return 4

    def load(self, index: int) -> torch.Tensor:
        return torch.full((1, 4, 4), index, dtype=torch.uint8)

    def label(self, index: int) -> int:
        return index

    def describe(self, index: int) -> str:
        return f"digit {index}"


def test_main_process_transforms_run_on_one_thread_and_the_count_comes_back() -> None:
    from cnnlab.data.loader import make_loader

    seen: list[int] = []

    def transform(img: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return img + 1

    loader = make_loader(_Digits(), transform, 2, shuffle=False, seed=0, workers=0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        batches = list(loader)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1, 1, 1]
    assert torch.equal(torch.cat([b.images for b in batches]), torch.arange(1, 5, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 4, 4))
    assert torch.cat([b.labels for b in batches]).tolist() == [0, 1, 2, 3]
