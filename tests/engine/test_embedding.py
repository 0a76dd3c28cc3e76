"""``--task embedding``: the pair/triplet losses, the verification pairs, an evaluation that is the same
however the held-out set is split over ranks, and a short run through train → valid → predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.data.datasets import open_split
from cnnlab.data.export import export_class_folders
from cnnlab.data.loader import Batch
from cnnlab.errors import CnnlabError
from cnnlab.tasks import embedding as emb_mod
from cnnlab.tasks.embedding import EmbeddingEvaluator, contrastive_loss, retrieval_hits, triplet_loss, verification_pairs

CLASSES = [str(i) for i in range(4)]


def clusters(n_per_class: int = 10, noise: float = 0.05, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors around one random centre per class."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(len(CLASSES), dim, generator=g), dim=1)
    labels = torch.arange(len(CLASSES)).repeat_interleave(n_per_class)
    return F.normalize(centres[labels] + noise * torch.randn(len(labels), dim, generator=g), dim=1), labels


def test_losses_are_zero_for_separated_classes_and_positive_for_a_collapsed_batch():
    emb, labels = clusters(noise=0.01)
    assert triplet_loss(emb, labels, margin=0.2).item() == 0.0
    terms = contrastive_loss(emb, labels, margin=0.5)
    assert set(terms) == {"pull", "push"} and terms["push"].item() == 0.0 and terms["pull"].item() < 1e-2
    collapsed = F.normalize(torch.ones(len(labels), 8) + 1e-3 * torch.randn(len(labels), 8), dim=1).requires_grad_()
    loss = triplet_loss(collapsed, labels, margin=0.2)
    assert loss.item() == pytest.approx(0.2, abs=0.01)  # every triplet violates the margin by the margin itself
    loss.backward()
    assert collapsed.grad.abs().sum() > 0
    assert contrastive_loss(collapsed, labels, 0.5)["push"].item() == pytest.approx(0.25, abs=0.01)


def test_a_batch_without_positives_gives_a_zero_loss_that_keeps_the_graph():
    x = torch.randn(4, 8, requires_grad=True)
    loss = triplet_loss(F.normalize(x, dim=1), torch.arange(4), margin=0.2)  # one image per class
    assert loss.item() == 0.0
    loss.backward()  # no error: the step just does nothing


def test_verification_pairs_are_half_positive_seeded_and_never_an_image_with_itself():
    labels = np.repeat(np.arange(10), 100)[np.random.default_rng(1).permutation(1000)]
    i, j, same = verification_pairs(labels, 10_000, seed=0)
    assert len(same) == 10_000 and same.sum() == 5_000
    assert (labels[i] == labels[j]).tolist() == same.tolist()  # positives share a class, negatives do not
    assert not (i == j).any()
    again = verification_pairs(labels, 10_000, seed=0)
    assert all((a == b).all() for a, b in zip((i, j, same), again))
    # a tiny set gives fewer pairs: here 3 distinct positive pairs (a class of 3) and 2 + 1 singletons
    i, j, same = verification_pairs(np.array([0, 0, 0, 1, 2]), 10_000, seed=0)
    assert same.sum() == 3 and len(same) == 6


def test_verification_needs_positive_and_negative_pairs():
    with pytest.raises(CnnlabError, match="hold one class"):
        verification_pairs(np.zeros(5, dtype=np.int64), 100, 0)
    with pytest.raises(CnnlabError, match="no two images of one class"):
        verification_pairs(np.arange(5), 100, 0)


def test_retrieval_leaves_the_image_itself_out():
    emb = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0], [-1.0, 0.0]]), dim=1)
    hits = retrieval_hits(emb, torch.tensor([0, 0, 1, 1, 2]), k=1)
    assert hits[:, 0].tolist() == [True, True, True, True, False]  # class 2 has no other image


class Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def batches(emb: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, size: int) -> list[tuple[torch.Tensor, Batch]]:
    out = []
    for k in range(0, len(order), size):
        idx = order[k : k + size]
        out.append((emb[idx], Batch(torch.empty(0), labels[idx], idx, [], len(idx))))
    return out


def test_report_is_the_same_however_the_set_is_split_over_ranks(monkeypatch):
    emb, labels = clusters(n_per_class=30, noise=0.6)
    one = EmbeddingEvaluator(CLASSES, torch.device("cpu"), pairs=2000)
    for x, b in batches(emb, labels, torch.arange(len(labels)), 16):
        one.update(Identity(), x, b)
    expected = one.compute().to_dict()
    assert 0.6 < expected["roc_auc"] < 1.0  # noisy enough that a wrong pairing would change it

    # Two "ranks", each with its share (rank r: samples r, r + 2, ...) in its own batch order; the
    # gather hands every rank both shares, as torch.distributed's all_gather_object does.
    ranks = [EmbeddingEvaluator(CLASSES, torch.device("cpu"), pairs=2000) for _ in range(2)]
    for r, ev in enumerate(ranks):
        share = torch.arange(r, len(labels), 2).flip(0)
        for x, b in batches(emb, labels, share, 7):
            ev.update(Identity(), x, b)
    shares = [[torch.cat(ev.embeddings), torch.cat(ev.labels), torch.cat(ev.indices)] for ev in ranks]
    monkeypatch.setattr(emb_mod.distributed, "gather_objects", lambda mine: shares)
    assert ranks[1].compute().to_dict() == expected


def test_short_run_learns_and_valid_and_predict_report_embeddings(cli, tmp_path):
    """LeNet-5 on 1,280 of mnist5k's digits for 2 epochs (~2 s of training): AUC far above chance."""
    run = tmp_path / "emb"
    r = cli("train", "--task", "embedding", "--model", "lenet5", "--data", "mnist5k", "--train-limit", "1280", "--val-limit", "300",
            "--epochs", "2", "--opt", "adamw", "--lr", "2e-3", "--crop", "center", "--hflip", "0", "--embedding-dim", "16",
            "--workers", "0", "--no-progress", "--out", run)  # fmt: skip
    assert r.code == 0, r.err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "embedding" and summary["roc_auc"] > 0.9, summary  # chance is 0.5; ~0.96 here
    assert "ROC AUC" in r.out and "recall@1" in r.out
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    centres = ckpt["task_state"]["centres"]
    assert centres.shape == (10, 16) and torch.allclose(centres.norm(dim=1), torch.ones(10), atol=1e-5)
    assert sum(ckpt["task_state"]["counts"]) == 1280

    r = cli("valid", "-c", run, "--workers", "0", "--no-progress")
    assert r.code == 0, r.err
    auc = json.loads((run / "valid-val.json").read_text())["roc_auc"]
    assert f"verification ROC AUC {auc:.4f}" in r.out and "recall@5" in r.out.splitlines()[0]

    # classes the run never saw (the digits renamed): an embedding is still scored, within the set
    new = tmp_path / "new-classes"
    for split, per_class in (("train", 1), ("val", 10)):
        export_class_folders(open_split("mnist5k", "val"), new, split, per_class=per_class)
        for folder in (new / split).iterdir():
            folder.rename(folder.with_name(f"person{folder.name}"))
    r = cli("valid", "-c", run, "--data", new, "--workers", "0", "--no-progress", "--json", tmp_path / "new.json")
    assert r.code == 0, r.err
    assert "person7" in r.out and json.loads((tmp_path / "new.json").read_text())["count"] == 100

    image = next((new / "val" / "person7").glob("*.png"))
    r = cli("predict", "-c", run, "--format", "json", "-t", "3", image)
    assert r.code == 0, r.err
    (doc,) = json.loads(r.out)
    assert len(doc["embedding"]) == 16 and abs(np.linalg.norm(doc["embedding"]) - 1) < 1e-5
    sims = [n["similarity"] for n in doc["nearest"]]
    assert len(sims) == 3 and sims == sorted(sims, reverse=True) and {"label", "index"} <= set(doc["nearest"][0])
    r = cli("predict", "-c", run, "-t", "2", image)
    assert r.code == 0 and len(r.out.splitlines()) == 3 and r.out.splitlines()[1].startswith(f"{sims[0]:6.4f}: ")

    # exported, the file says it holds an embedding network (it said: classify, logits, top-1 equal)
    r = cli("export", run, "--format", "onnx", "--check-images", "4")
    assert r.code == 0, r.err
    assert "outputs embedding" in r.out and "parity on 4" in r.out and "top-1" not in r.out
    from cnnlab.export import load_onnxruntime

    onnx = load_onnxruntime(run / "checkpoints" / "best.onnx")
    assert onnx.metadata["task"] == "embedding" and json.loads(onnx.metadata["outputs"]) == ["embedding"]
    assert onnx(np.zeros((1, 1, 32, 32), np.float32))[0].shape == (1, 16)

    # --init from it at another width names the width, not a class count
    r = cli("train", "--task", "embedding", "--model", "lenet5", "--data", "mnist5k", "--embedding-dim", "8",
            "--init", run / "checkpoints" / "best.pt", "--out", tmp_path / "wider")  # fmt: skip
    assert r.code == 2 and "gives 16-wide embeddings and this run's --embedding-dim is 8" in r.err and "classes" not in r.err, r.err


def test_checkpoint_without_centres_is_one_clear_error():
    with pytest.raises(CnnlabError, match="holds no class centres.*--resume"):
        emb_mod.centres_of({"task_state": {}}, "RUN/best.pt")


def test_classification_only_options_are_refused(cli, tmp_path):
    r = cli("train", "--task", "embedding", "--model", "lenet5", "--data", "digits", "--class-weights", "auto", "--out", tmp_path / "r")
    assert r.code == 2 and "--class-weights weighs the classification loss" in r.err
