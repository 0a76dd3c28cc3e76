"""Embeddings from positive and negative pairs (metric learning): pull images of one class together,
push images of different classes apart.

The network is an ordinary zoo classifier whose output layer has ``embedding_dim`` units; this task
L2-normalises its output, so a checkpoint rebuilds it like any other. Pairs and triplets are mined
from the class labels of each batch: *batch-all triplets* (every anchor, positive and negative of the
batch, averaged over the triplets that still violate the margin; Hermans et al. 2017, who found it
steadier; batch-hard stalled here at a loss equal to the margin, its embeddings nearly collapsed) or a *contrastive*
loss over every pair of the batch (Hadsell et al. 2006). Evaluation: verification ROC AUC on seeded pairs of held-out images (half
positive) and leave-one-out retrieval recall@1/5. The run keeps each class's mean embedding over the
training set (its centre), so ``cnnlab predict`` can name an image's nearest classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.loader import Batch
from cnnlab.data.sources.base import ImageSource
from cnnlab.engine import distributed
from cnnlab.engine.predict import Predictor
from cnnlab.engine.task import TASKS, Evaluator, Report, Task
from cnnlab.errors import CnnlabError
from cnnlab.model_meta import Preprocess
from cnnlab.models import Classifier, create_model
from cnnlab.models.layers import unwrap

PAIRS = 10_000  # verification pairs drawn from the held-out set (half positive)
PAIR_SEED = 0  # fixed: every evaluation of a run, and every run on the same set, scores the same pairs
RECALL_AT = (1, 5)


def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's output as unit vectors, in fp32: (B, D)."""
    return F.normalize(model(images).float(), dim=1)


def _distances(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between unit vectors, (B, B): sqrt(2 - 2 cos), clamped so sqrt has a gradient."""
    return (2 - 2 * emb @ emb.T).clamp_min(1e-12).sqrt()


def _pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same  # positive pairs (not an image with itself), negative pairs


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-all triplet loss: every (anchor, positive, negative) of the batch, max(0, d(a, p) - d(a, n)
    + margin) averaged over the triplets that still violate the margin (the easy ones would dilute it)."""
    d = _distances(emb)
    pos, neg = _pair_masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]  # (B, B, B): a, p, n
    losses = F.relu(d[:, :, None] - d[:, None, :] + margin)[valid]
    active = losses > 1e-12
    if not active.any():
        return emb.sum() * 0.0  # no violating triplet in this batch: a zero that keeps the graph
    return losses[active].mean()


def contrastive_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> dict[str, torch.Tensor]:
    """Contrastive loss over every pair of the batch: positives pulled to distance 0 (mean d²),
    negatives pushed beyond ``margin`` (mean max(0, margin - d)²)."""
    d = _distances(emb)
    pos, neg = _pair_masks(labels)
    zero = emb.sum() * 0.0
    pull = d[pos].pow(2).mean() if pos.any() else zero
    push = F.relu(margin - d[neg]).pow(2).mean() if neg.any() else zero
    return {"pull": pull, "push": push}


class Embedding(Task):
    name = "embedding"

    def __init__(
        self, classes: list[str], device: torch.device, dim: int = 64, loss: str = "triplet", margin: float = 0.2,
        centres_from: "CentreSource | None" = None,
    ) -> None:  # fmt: skip
        super().__init__(classes, device)
        if len(classes) < 2:
            raise CnnlabError(f"the data has {len(classes)} class; embeddings from positive and negative pairs need at least 2 class folders")
        if dim < 1:
            raise CnnlabError(f"--embedding-dim must be at least 1, got {dim}")
        if not 0 < margin <= 2:
            raise CnnlabError(f"--margin {margin}: distances between unit vectors lie in 0..2; give a margin in (0, 2] (0.2 is usual)")
        self.dim, self.loss, self.margin, self.centres_from = dim, loss, margin, centres_from

    def build_model(self, model: str, model_kwargs: dict) -> nn.Module:
        return create_model(model, num_classes=self.dim, **model_kwargs)

    def check_model(self, model: nn.Module) -> None:
        net = unwrap(model)
        if not isinstance(net, Classifier):
            raise CnnlabError(f"{getattr(model, 'source', type(model).__name__)} is not a zoo backbone with an output layer; --task embedding needs one")
        if net.num_classes != self.dim:
            raise CnnlabError(f"the model outputs {net.num_classes} values but --embedding-dim is {self.dim}; start a new run, or resume without --embedding-dim")

    def losses(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        emb = embed(model, images)
        if self.loss == "contrastive":
            return contrastive_loss(emb, targets, self.margin), emb
        return {"triplet": triplet_loss(emb, targets, self.margin)}, emb

    def evaluator(self) -> "EmbeddingEvaluator":
        return EmbeddingEvaluator(self.classes, self.device)

    def evaluation(self, source: ImageSource) -> tuple[ImageSource, "EmbeddingEvaluator"]:
        """Embeddings are scored within the set (pairs, neighbours): any labelled set will do, even of
        classes the model never saw, so its classes are its own."""
        return source, EmbeddingEvaluator(list(source.classes), self.device)

    def predictor(self, model: nn.Module, pre: Preprocess, device: torch.device, ckpt: dict, where: str) -> Predictor:
        """The unit embedding and the nearest class centres the run stored (cosine similarity)."""
        return Predictor(model, self.classes, pre, device, centres_of(ckpt, where))

    def extra_state(self, model: nn.Module, loader_factory=None) -> dict:
        """Each class's centre: the mean embedding of its training images (evaluation transform), re-normalised."""
        if self.centres_from is None:
            return {}
        centres, counts = self.centres_from.centres(model, len(self.classes), self.device)
        return {"centres": centres.cpu(), "counts": counts}


@dataclass
class CentreSource:
    """Where the class centres come from at the end of training: the training images, seen as in evaluation."""

    source: ImageSource
    preprocess: dict  # --preprocess overrides of the model's own
    batch_size: int
    workers: int

    @torch.no_grad()
    def centres(self, model: nn.Module, n_classes: int, device: torch.device) -> tuple[torch.Tensor, list[int]]:
        """(C, D) unit centres (zero for a class without images) and the image count per class, over every rank."""
        from cnnlab.data.loader import make_loader
        from cnnlab.data.transforms import DeviceNormalize, eval_transform
        from cnnlab.engine.build import build_preprocess

        pre = build_preprocess(model, self.preprocess)
        d = distributed.env_dist()
        loader = make_loader(self.source, eval_transform(pre), self.batch_size, shuffle=False, workers=self.workers, rank=d.rank, world=d.world)
        normalize = DeviceNormalize(pre).to(device).eval()
        was_training = model.training
        model.eval()
        acc = torch.zeros(n_classes, unwrap(model).num_classes + 1, dtype=torch.float64, device=device)  # (C, D + 1): sums, count
        for batch in loader:  # unreadable images were dropped by the loader's collate
            if batch.labels.numel():
                emb = embed(model, normalize(batch.images.to(device))).double()
                acc.index_add_(0, batch.labels.to(device), F.pad(emb, (0, 1), value=1.0))
        model.train(was_training)
        acc = torch.tensor(distributed.sum_floats(acc.flatten().tolist(), device), dtype=torch.float64).view(n_classes, -1)
        return F.normalize(acc[:, :-1], dim=1).float(), [int(c) for c in acc[:, -1].tolist()]


class EmbeddingEvaluator(Evaluator):
    """Keeps every held-out embedding; :meth:`compute` gathers all ranks' and scores their union in
    sample order, so the report is the same for any number of processes."""

    def __init__(self, classes: list[str], device: torch.device, pairs: int = PAIRS, seed: int = PAIR_SEED) -> None:
        self.classes, self.device, self.pairs, self.seed = classes, device, pairs, seed
        self.embeddings: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.indices: list[torch.Tensor] = []

    def update(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> None:
        if images.ndim == 5:  # ten-crop: the mean of the ten unit embeddings, re-normalised
            b, n = images.shape[:2]
            emb = F.normalize(embed(model, images.flatten(0, 1)).view(b, n, -1).mean(1), dim=1)
        else:
            emb = embed(model, images)
        self.embeddings.append(emb.cpu())
        self.labels.append(batch.labels.cpu())
        self.indices.append(batch.indices.cpu())

    def compute(self) -> "EmbeddingReport":
        mine = [torch.cat(x) if x else torch.empty(0) for x in (self.embeddings, self.labels, self.indices)]
        ranks = [r for r in distributed.gather_objects(mine) if r[2].numel()]
        if not ranks:
            raise CnnlabError("no readable images to evaluate; check the data path and split")
        indices = torch.cat([r[2] for r in ranks]).long()
        order = indices.argsort()
        emb = torch.cat([r[0] for r in ranks])[order]
        labels = torch.cat([r[1] for r in ranks]).long()[order]
        return EmbeddingReport.from_embeddings(emb, labels, self.classes, self.pairs, self.seed)


def verification_pairs(labels: np.ndarray, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded pairs ``(i, j, same)``: half of them two images of one class, half of two classes,
    drawn with replacement (fewer when the set has fewer distinct pairs of a kind)."""
    n = len(labels)
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    distinct_pos = int((sizes * (sizes - 1) // 2).sum())
    distinct_neg = n * (n - 1) // 2 - distinct_pos
    half = min(n_pairs // 2, distinct_pos, distinct_neg)
    if half == 0:
        raise CnnlabError(
            f"the {n} held-out images {'hold one class' if distinct_neg == 0 else 'have no two images of one class'}; "
            "verification needs positive and negative pairs: evaluate on more images (raise --val-limit)"
        )
    rng = np.random.default_rng(seed)
    # positives: an anchor of a class with >= 2 images, then another image of its class
    anchors = np.flatnonzero(sizes[labels] >= 2)
    i_pos = anchors[rng.integers(0, len(anchors), half)]
    c = labels[i_pos]
    q = starts[c] + rng.integers(0, sizes[c] - 1)  # a slot among the class's other sizes-1 images
    q += q >= position[i_pos]  # skip the anchor itself
    j_pos = order[q]
    # negatives: any anchor with another class's image (every class in this set has fewer than n images)
    i_neg = rng.integers(0, n, half)
    c = labels[i_neg]
    r = rng.integers(0, n - sizes[c])
    j_neg = order[np.where(r < starts[c], r, r + sizes[c])]
    same = np.concatenate([np.ones(half, dtype=bool), np.zeros(half, dtype=bool)])
    return np.concatenate([i_pos, i_neg]), np.concatenate([j_pos, j_neg]), same


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, scores))


def retrieval_hits(emb: torch.Tensor, labels: torch.Tensor, k: int, block: int = 1024) -> torch.Tensor:
    """(N, k) bool: whether each image's j-th nearest other image (cosine) has its class."""
    n = len(labels)
    k = min(k, n - 1)
    hits = []
    for start in range(0, n, block):  # blocks of rows keep the similarity matrix small for big sets
        sims = emb[start : start + block] @ emb.T  # (b, N)
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = -float("inf")  # leave the image itself out
        nearest = sims.topk(k, dim=1).indices
        hits.append(labels[nearest] == labels[start : start + block, None])
    return torch.cat(hits)


@dataclass
class EmbeddingReport(Report):
    roc_auc: float  # verification, 0..1
    recall: dict[int, float]  # retrieval recall@k, percent
    pairs: int
    positive_similarity: float  # mean cosine of the positive pairs
    negative_similarity: float
    count: int
    classes: list[str]
    support: list[int]  # held-out images per class
    class_recall: dict[int, list[float]]  # recall@k per class, percent

    @classmethod
    def from_embeddings(cls, emb: torch.Tensor, labels: torch.Tensor, classes: list[str], n_pairs: int, seed: int) -> "EmbeddingReport":
        lab = labels.numpy()
        i, j, same = verification_pairs(lab, n_pairs, seed)
        scores = (emb[i] * emb[j]).sum(1).numpy()
        hits = retrieval_hits(emb, labels, max(RECALL_AT))
        support = torch.bincount(labels, minlength=len(classes))
        recall, class_recall = {}, {}
        for k in RECALL_AT:
            hit = hits[:, :k].any(1).double()
            recall[k] = 100.0 * hit.mean().item()
            per = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, labels, hit)
            class_recall[k] = (100.0 * per / support.clamp_min(1)).tolist()
        return cls(
            roc_auc=roc_auc(scores, same), recall=recall, pairs=len(same),
            positive_similarity=float(scores[same].mean()), negative_similarity=float(scores[~same].mean()),
            count=len(lab), classes=list(classes), support=support.tolist(), class_recall=class_recall,
        )  # fmt: skip

    @property
    def primary(self) -> float:
        return self.roc_auc

    def record(self) -> dict[str, float]:
        return {"val_roc_auc": self.roc_auc} | {f"val_recall@{k}": v for k, v in self.recall.items()}

    def line(self) -> str:
        return f"val ROC AUC {self.roc_auc:.4f} recall@1 {self.recall[1]:.2f}% recall@5 {self.recall[5]:.2f}%"

    def headline(self) -> str:
        return f"ROC AUC {self.roc_auc:.4f} ({self.pairs} pairs)  recall@1 {self.recall[1]:.2f}%  recall@5 {self.recall[5]:.2f}%"

    def summary(self) -> dict[str, float]:
        return {"roc_auc": self.roc_auc, "recall@1": self.recall[1], "recall@5": self.recall[5], "pairs": self.pairs}

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["recall"] = {f"@{k}": v for k, v in self.recall.items()}
        d["class_recall"] = {f"@{k}": v for k, v in self.class_recall.items()}
        return d

    def table(self, max_rows: int = 50) -> str:
        """Per-class retrieval recall, then the verification and retrieval totals."""
        width = max([5] + [len(c) for c in self.classes[:max_rows]])
        lines = [f"{'class':<{width}}  images  recall@1  recall@5"]
        for c, name in enumerate(self.classes[:max_rows]):
            lines.append(f"{name:<{width}}  {self.support[c]:6d}  {self.class_recall[1][c]:7.2f}%  {self.class_recall[5][c]:7.2f}%")
        if len(self.classes) > max_rows:
            lines.append(f"… {len(self.classes) - max_rows} more classes in the JSON report")
        lines.append(f"{'all':<{width}}  {self.count:6d}  {self.recall[1]:7.2f}%  {self.recall[5]:7.2f}%")
        lines.append(
            f"verification ROC AUC {self.roc_auc:.4f} on {self.pairs} pairs (half positive; mean cosine "
            f"{self.positive_similarity:.3f} positive, {self.negative_similarity:.3f} negative)  ({self.count} images)"
        )
        return "\n".join(lines)


@TASKS.register("embedding")
def build(cfg, source: ImageSource, device: torch.device) -> Embedding:
    if cfg is None:  # evaluation only
        return Embedding(list(source.classes), device)
    if cfg.class_weights:
        raise CnnlabError("--class-weights weighs the classification loss; for --task embedding use --balance sampler")
    if cfg.label_smoothing:
        raise CnnlabError("--label-smoothing is for classification; drop it (--label-smoothing 0) for --task embedding")
    centres = CentreSource(source, dict(cfg.preprocess), cfg.batch_size, cfg.workers)
    return Embedding(list(source.classes), device, cfg.embedding_dim, cfg.embedding_loss, cfg.margin, centres)


def centres_of(ckpt: dict, where: str = "the checkpoint") -> torch.Tensor:
    """The (C, D) class centres an embedding run stored when it finished."""
    centres = (ckpt.get("task_state") or {}).get("centres")
    if centres is None:
        raise CnnlabError(
            f"{where} holds no class centres (an embedding run stores them when training finishes); "
            "finish the run with `cnnlab train --resume RUN_DIR`"
        )
    return centres
