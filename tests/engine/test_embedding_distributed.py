"""``--task embedding`` under torchrun (gloo, 2 CPU processes of one thread each): each rank embeds its
share of the held-out set and of the training set (class centres), and the results equal one process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab import config
from cnnlab.engine import checkpoint as ckpt_mod
from cnnlab.engine.build import load_sources
from cnnlab.tasks.embedding import CentreSource
from tests.engine.conftest import REPO, run_process

ARGS = ["--task", "embedding", "--model", "lenet5", "--data", "digits", "--train-limit", "256",
        "--epochs", "1", "--batch-size", "16", "--opt", "adamw", "--lr", "2e-3", "--embedding-dim", "8",
        "--workers", "0", "--no-progress", "--amp", "off"]  # fmt: skip


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp-embedding") / "two"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cnnlab", "train", *ARGS, "--out", str(out)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_two_rank_evaluation_equals_one_process(two_process_run: Path, tmp_path: Path) -> None:
    two = json.loads((two_process_run / "valid.json").read_text())
    r = run_process("valid", "-c", two_process_run / "checkpoints" / "last.pt", "--workers", "0", "--no-progress", "--json", tmp_path / "one.json")
    assert r.code == 0, r.err
    one = json.loads((tmp_path / "one.json").read_text())
    assert two["count"] == one["count"] == 359  # an odd count: the ranks' shares differ in size
    assert two["support"] == one["support"] and two["pairs"] == one["pairs"]
    # The same pairs and neighbours; the embeddings themselves differ in the last bits (batches of 16
    # per rank there, of 64 here), which may swap a few near-tied scores: hence a tolerance, far below
    # what a double-counted or missing image would move (test_embedding.py checks the union exactly).
    assert two["roc_auc"] == pytest.approx(one["roc_auc"], abs=1e-4)
    assert two["recall"] == pytest.approx(one["recall"], abs=0.3)  # one image of 359 is 0.28 points


def test_two_rank_class_centres_equal_one_process(two_process_run: Path) -> None:
    ckpt = ckpt_mod.load(two_process_run / "checkpoints" / "last.pt")
    model, _, _ = ckpt_mod.model_from_checkpoint(ckpt)
    cfg = config.resolve(None, config.load_saved(two_process_run / "config.yaml"))
    train = load_sources(cfg).train
    centres, counts = CentreSource(train, {}, 32, 0).centres(model, len(train.classes), torch.device("cpu"))
    assert ckpt["task_state"]["counts"] == counts and sum(counts) == 256  # every training image once
    torch.testing.assert_close(ckpt["task_state"]["centres"], centres, rtol=0, atol=1e-5)
