"""Faults around a run's life: a resume that would change the run, bad images across a stop, a run
that failed before its first checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cnnlab.engine import preemption
from tests.engine.conftest import TINY
from tests.engine.test_bad_input import folders  # noqa: F401  (fixture: class folders with 2 bad images)


def _one_line(r, *needles: str) -> None:
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    for needle in needles:
        assert needle in r.err, r.err


def test_resume_refuses_other_data_naming_it(cli, tiny_run: Path) -> None:
    _one_line(cli("train", "--resume", tiny_run, "--data", "mnist5k"), "was trained on 'digits', not 'mnist5k'", "resume without --data")


def test_resume_refuses_another_model(cli, tiny_run: Path) -> None:
    _one_line(cli("train", "--resume", tiny_run, "--model", "resnet18"), "trains 'lenet5', not 'resnet18'")


def test_resume_refuses_another_task(cli, tiny_run: Path) -> None:
    _one_line(cli("train", "--resume", tiny_run, "--task", "embedding"), "is a classify run, not embedding")


def _stop_at_first_step(monkeypatch) -> None:
    """As if SIGTERM arrived before the first optimizer step (deterministic, unlike a real signal)."""

    def enter(self):
        self.requested = True
        return self

    monkeypatch.setattr(preemption.Preemption, "__enter__", enter)


def test_bad_images_seen_before_a_stop_are_kept_by_the_resumed_run(cli, folders: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    run = tmp_path / "run"
    args = ["--model", "lenet5", "--data", folders, "--epochs", "1", "--workers", "0", "--no-progress", "--batch-size", "60",
            "--max-bad-fraction", "0.05"]  # fmt: skip
    with monkeypatch.context() as m:
        _stop_at_first_step(m)
        r = cli("train", *args, "--out", run)
    assert r.code == 143 and "stopped by SIGTERM" in r.err
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    before = ckpt["ranks"][0]["bad"]
    assert before and ckpt["train_state"]["samples_drawn"] == 60  # the first batch met a bad image
    r = cli("train", "--resume", run)
    assert r.code == 0, r.err
    bad = json.loads((run / "summary.json").read_text())["bad_images"]
    assert set(before) <= set(bad) and len(bad) == 2


def test_a_run_that_failed_before_its_first_checkpoint_can_be_resumed(cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = cli("train", *TINY, "--lr", "1e30", "--warmup-epochs", "0", "--out", run)
    assert r.code == 2 and "loss became" in r.err and (run / "config.yaml").is_file()
    again = cli("train", *TINY, "--out", run)
    _one_line(again, "already exists", f"--resume {run}")
    r = cli("train", "--resume", run, "--lr", "0.05")
    assert r.code == 0, r.err
    assert (run / "checkpoints" / "last.pt").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_two_processes_on_one_run_directory(cli, tiny_run: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.engine.conftest import REPO

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from cnnlab.engine.rundir import lock_run; from pathlib import Path; "
         "lock_run(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)", str(tiny_run)],
        stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        _one_line(cli("train", "--resume", tiny_run), "is in use by another cnnlab process", f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


def test_a_bad_image_in_the_dropped_last_batch_is_reported(cli, tmp_path: Path) -> None:
    """6 training images, batch 4: the epoch's last 2 samples are never trained on; a bad one there counts."""
    from PIL import Image

    from cnnlab.data.loader import ResumableSampler

    files = []
    for split, n in (("train", 3), ("val", 2)):
        for c, colour in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(n):
                p = tmp_path / "data" / split / c / f"{i}.png"
                Image.new("RGB", (12, 12), colour).save(p)
                files += [p] if split == "train" else []
    order = ResumableSampler(6, seed=0, shuffle=True, drop_last=True).indices()
    files[order[-1]].write_text("not pixels")  # sorted class, then file: source index == position in files
    r = cli("train", "--model", "lenet5", "--data", tmp_path / "data", "--epochs", "1", "--batch-size", "4", "--workers", "0",
            "--no-progress", "--max-bad-fraction", "0.5", "--out", tmp_path / "run")  # fmt: skip
    assert r.code == 0, r.err
    bad = json.loads((tmp_path / "run" / "summary.json").read_text())["bad_images"]
    assert len(bad) == 1 and str(files[order[-1]]) in bad[0], bad


def test_a_resume_records_a_longer_run_and_refuses_keys_it_could_not_apply(cli, tmp_path: Path) -> None:
    """--epochs extends a resumed run and the folder says so (config.yaml kept the old count); --lr was
    accepted and silently overridden by the optimizer and schedule the run continues."""
    run = tmp_path / "run"
    assert cli("train", *TINY, "--out", run).code == 0
    r = cli("train", "--resume", run, "--lr", "0.5")
    _one_line(r, "--lr cannot change when resuming", f"--init {run / 'checkpoints' / 'last.pt'}")
    r = cli("train", "--resume", run, "--epochs", "2", "--workers", "0")
    assert r.code == 0, r.err
    assert "resumed with epochs 2 (was 1)" in r.out
    assert "epochs: 2\n" in (run / "config.yaml").read_text()
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2
