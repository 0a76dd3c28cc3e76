"""Classification: a class index per image, cross-entropy (with auxiliary heads, label smoothing and
optional class weights), evaluated by top-1/top-5, per-class scores, confusion and Cohen's kappa."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.loader import Batch
from cnnlab.engine import distributed
from cnnlab.engine.predict import Predictor
from cnnlab.engine.task import TASKS, Evaluator, Task
from cnnlab.errors import CnnlabError
from cnnlab.metrics import ClassificationReport, build_metrics
from cnnlab.model_meta import Preprocess
from cnnlab.models import Classifier, create_model
from cnnlab.models.layers import aux_loss, unwrap


class Classification(Task):
    name = "classify"

    def __init__(self, classes: list[str], device: torch.device, label_smoothing: float = 0.0,
                 class_weights: torch.Tensor | None = None) -> None:  # fmt: skip
        super().__init__(classes, device)
        if len(classes) < 2:
            raise CnnlabError(f"the data has {len(classes)} class ({', '.join(classes)}); classification needs at least 2 class folders")
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights.to(device) if class_weights is not None else None

    def build_model(self, model: str, model_kwargs: dict) -> nn.Module:
        return create_model(model, num_classes=len(self.classes), **model_kwargs)

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(unwrap(model), Classifier):
            source = getattr(model, "source", type(model).__name__)
            raise CnnlabError(f"{source} is not a classifier (a detector cfg?); train it with --task detect")

    def _criterion(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, weight=self.class_weights, label_smoothing=self.label_smoothing)

    def losses(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        logits = model(images)
        terms = {"cls": self._criterion(logits, targets)}
        aux = aux_loss(model, self._criterion, targets)  # GoogLeNet / Inception v3 auxiliary heads
        if isinstance(aux, torch.Tensor):
            terms["aux"] = aux
        return terms, logits

    def tally(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {"correct": float((outputs.argmax(1) == targets).sum())}

    def train_record(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        return {"train_top1": 100.0 * sums.get("correct", 0.0) / max(1, seen)}

    def train_line(self, record: dict[str, float]) -> str:
        return f"top-1 {record['train_top1']:.2f}%"

    def evaluator(self) -> "ClassificationEvaluator":
        return ClassificationEvaluator(self.classes, self.device)

    def predictor(self, model: nn.Module, pre: Preprocess, device: torch.device, ckpt: dict, where: str) -> Predictor:
        """The top classes by softmax probability, in darknet's layout."""
        return Predictor(model, self.classes, pre, device)


class ClassificationEvaluator(Evaluator):
    """Streaming metrics (torchmetrics); ten-crop batches ``(B, 10, C, H, W)`` are scored by the mean
    of the ten softmax outputs, as in AlexNet / GoogLeNet evaluation. Under several processes each
    rank sees its own share and the counts are summed, so every image counts once."""

    def __init__(self, classes: list[str], device: torch.device) -> None:
        self.classes, self.device = classes, device
        self.metrics = build_metrics(len(classes), device)
        self.loss_sum, self.count = 0.0, 0

    def update(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> None:
        labels = batch.labels.to(self.device, non_blocking=True)
        if images.ndim == 5:  # ten-crop
            b, n = images.shape[:2]
            probs = model(images.flatten(0, 1)).float().view(b, n, -1).softmax(-1).mean(1)
            loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum")
            scores = probs
        else:
            scores = model(images).float()
            loss = F.cross_entropy(scores, labels, reduction="sum")
        self.metrics.update(scores, labels)
        self.loss_sum += loss.item()
        self.count += labels.numel()

    def compute(self) -> ClassificationReport:
        loss_sum, count = distributed.sum_floats([self.loss_sum, self.count], self.device)
        if not count:
            raise CnnlabError("no readable images to evaluate; check the data path and split")
        computed = self.metrics.compute()  # torchmetrics sums the states over ranks when there are several
        return ClassificationReport.from_metrics(computed, loss_sum / count, self.classes)


def class_weights_from(spec: str, labels: list[int], classes: list[str]) -> torch.Tensor | None:
    """``--class-weights``: ``auto`` (inverse class frequency, mean 1 over the classes present) or a
    file with one weight per class (one per line, in class order, or ``name weight`` lines)."""
    if not spec:
        return None
    if spec == "auto":
        counts = torch.bincount(torch.tensor(labels, dtype=torch.int64), minlength=len(classes)).double()
        w = torch.where(counts > 0, counts.sum() / (len(classes) * counts.clamp_min(1)), torch.zeros_like(counts))
        return w.float()
    return _weights_file(Path(spec), classes)


def _weights_file(path: Path, classes: list[str]) -> torch.Tensor:
    if not path.is_file():
        raise CnnlabError(f"--class-weights {path}: no such file; give 'auto' or a file with one weight per class")
    # "name weight" splits at the last blank, so class names may contain spaces ("golden retriever 2.5")
    rows = [line.strip().rsplit(None, 1) for line in path.read_text(errors="replace").splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        if rows and all(len(r) == 2 for r in rows):
            values = _named_weights(path, rows, classes)
        else:
            values = [float(r[0]) if len(r) == 1 else float("nan") for r in rows]
            if any(v != v for v in values):
                raise ValueError
    except ValueError:
        raise CnnlabError(f"{path}: weights must be numbers, one per class (or 'name weight' lines)") from None
    if len(values) != len(classes):
        raise CnnlabError(f"{path} has {len(values)} weights but the data has {len(classes)} classes; give one per class")
    if any(v < 0 for v in values) or not any(v > 0 for v in values):
        raise CnnlabError(f"{path}: class weights must not be negative, and at least one must be positive")
    return torch.tensor(values, dtype=torch.float32)


def _named_weights(path: Path, rows: list[list[str]], classes: list[str]) -> list[float]:
    by_name: dict[str, float] = {}
    for name, weight in rows:
        if name in by_name:
            raise CnnlabError(f"{path}: class {name!r} has two weights; give one line per class")
        by_name[name] = float(weight)
    unknown = [name for name in by_name if name not in classes]
    if unknown:
        raise CnnlabError(f"{path}: {unknown[0]!r} is not a class of this data ({len(unknown)} unknown); the classes are {', '.join(classes[:10])}{' …' if len(classes) > 10 else ''}")
    missing = [c for c in classes if c not in by_name]
    if missing:
        raise CnnlabError(f"{path}: no weight for class {missing[0]!r} ({len(missing)} missing); give one line per class")
    return [by_name[c] for c in classes]


@TASKS.register("classify")
def build(cfg, source, device: torch.device) -> Classification:
    if cfg is None:  # evaluation only
        return Classification(list(source.classes), device)
    weights = class_weights_from(cfg.class_weights, source.labels() if cfg.class_weights == "auto" else [], list(source.classes))
    return Classification(list(source.classes), device, cfg.label_smoothing, weights)
