"""Classification metrics, accumulated batch by batch (torchmetrics does the bookkeeping).

Streaming, so ImageNet's 50,000 × 1,000 logits never sit in memory: top-1/top-5 accuracy, the
confusion matrix, per-class precision/recall/F1 and Cohen's kappa.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCohenKappa,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from cnnlab.engine.task import Report


def build_metrics(num_classes: int, device: torch.device | str = "cpu") -> MetricCollection:
    top5 = min(5, num_classes)
    return MetricCollection(
        {
            "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes, top_k=top5, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="none"),
            "recall": MulticlassRecall(num_classes, average="none"),
            "f1": MulticlassF1Score(num_classes, average="none"),
            "kappa": MulticlassCohenKappa(num_classes),
            "confusion": MulticlassConfusionMatrix(num_classes),
        },
        # Compute groups merge metrics whose states happen to match after the first batch; top-1 and
        # top-5 then share top-1's state (seen: top-5 == top-1 on a class-sorted split). Keep them apart.
        compute_groups=False,
    ).to(device)


@dataclass
class ClassificationReport(Report):
    top1: float  # percent
    top5: float
    loss: float
    kappa: float
    count: int
    classes: list[str]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]  # rows = true class, columns = predicted

    @classmethod
    def from_metrics(cls, computed: dict[str, torch.Tensor], loss: float, classes: list[str]) -> "ClassificationReport":
        confusion = computed["confusion"].long().cpu()
        return cls(
            top1=100.0 * computed["top1"].item(),
            top5=100.0 * computed["top5"].item(),
            loss=loss,
            kappa=computed["kappa"].item(),
            count=int(confusion.sum()),
            classes=list(classes),
            precision=computed["precision"].cpu().tolist(),
            recall=computed["recall"].cpu().tolist(),
            f1=computed["f1"].cpu().tolist(),
            support=confusion.sum(1).tolist(),
            confusion=confusion.tolist(),
        )

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def primary(self) -> float:
        return self.top1

    @property
    def shows_top5(self) -> bool:
        # With five classes or fewer every label is in the top five: top-5 is 100 % and says nothing.
        return len(self.classes) > 5

    def record(self) -> dict[str, float]:
        record = {"val_loss": self.loss, "val_top1": self.top1}
        return record | {"val_top5": self.top5} if self.shows_top5 else record

    def _accuracy(self, sep: str) -> str:
        top5 = f"{sep}top-5 {self.top5:.2f}%" if self.shows_top5 else ""
        return f"top-1 {self.top1:.2f}%{top5}"

    def line(self) -> str:
        return f"val loss {self.loss:.4f} {self._accuracy(' ')}"

    def headline(self) -> str:
        return f"{self._accuracy('  ')}  loss {self.loss:.4f}"

    def summary(self) -> dict[str, float]:
        return {"top1": self.top1, "top5": self.top5, "loss": self.loss, "kappa": self.kappa}

    def figures(self, run_dir: Path) -> None:
        from cnnlab.engine.rundir import plot_confusion

        plot_confusion(self.confusion, self.classes, run_dir / "confusion_matrix.png")

    def table(self, max_rows: int = 50) -> str:
        """Per-class precision/recall/F1 as a fixed-width table, then the totals."""
        width = max([5] + [len(c) for c in self.classes[:max_rows]])
        lines = [f"{'class':<{width}}  precision  recall      f1  support"]
        for i, name in enumerate(self.classes[:max_rows]):
            lines.append(
                f"{name:<{width}}  {self.precision[i]:9.4f}  {self.recall[i]:6.4f}  {self.f1[i]:6.4f}  {self.support[i]:7d}"
            )
        if len(self.classes) > max_rows:
            lines.append(f"… {len(self.classes) - max_rows} more classes in the JSON report")
        n = len(self.classes)
        lines.append(
            f"{'macro avg':<{width}}  {sum(self.precision) / n:9.4f}  {sum(self.recall) / n:6.4f}  {sum(self.f1) / n:6.4f}  {self.count:7d}"
        )
        lines.append(f"{self._accuracy('  ')}  loss {self.loss:.4f}  Cohen's kappa {self.kappa:.4f}  ({self.count} images)")
        return "\n".join(lines)
