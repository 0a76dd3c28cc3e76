"""Darknet classifier training as an engine :class:`~cnnlab.engine.task.Task`.

The loss is darknet's softmax + cost layers: the negative log-likelihood of
:meth:`~cnnlab.darknet.model.DarknetNet.forward_log_probs`, summed over the images and divided by the
images of one update (``batch`` × ``subdivisions``). Its evaluation is AlexeyAB's ``-topk``: the share
of the ``valid=`` images whose label is among the ``k`` best.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.loader import Batch
from cnnlab.darknet.model import DarknetNet, load_darknet
from cnnlab.engine.task import Evaluator, Report, Task
from cnnlab.errors import CnnlabError


class DarknetClassify(Task):
    """``cnnlab darknet classifier train``: a class index per image, darknet's loss, top-k on valid=."""

    name = "darknet-classify"
    nonfinite_advice = "lower learning_rate= (or add burn_in=) in [net]"

    def __init__(self, classes: list[str], device: torch.device, batch: int, subdivisions: int, top: int, k: int) -> None:
        super().__init__(classes, device)
        self.images_per_update = batch * subdivisions  # batch: images per micro-batch (cfg batch / subdivisions)
        # The engine divides each micro-batch's term by accum_steps (= subdivisions): in backward, a
        # float32 1/subdivisions. Darknet's term is its per-update share sum / (batch × subdivisions)
        # divided by that same float32 number, which cancels it exactly (x / x = 1 in IEEE
        # arithmetic): the gradient is 1 / (batch × subdivisions) rounded once, for any subdivisions,
        # where sum / batch would round twice. The term's value is sum / batch.
        self.engine_scale = torch.tensor(1.0) / subdivisions
        self.top, self.k = top, k  # top= of the .data (printed), k = min(top, classes) (measured)

    # Building and checking the net need no instance: darknet checks the cfg before it reads the .data.
    @staticmethod
    def build_model(model: str, model_kwargs: dict) -> DarknetNet:
        """``model`` is the cfg; ``model_kwargs`` may name the ``flavor``."""
        return load_darknet(model, None, model_kwargs.get("flavor", "pjreddie"))

    @staticmethod
    def check_model(model: nn.Module) -> None:
        if getattr(model, "is_detector", False):
            raise CnnlabError(f"{model.source} is a detector ([yolo]/[region]); `classifier train` trains classifiers")

    def losses(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        nll = F.nll_loss(model.forward_log_probs(images), targets, reduction="sum")
        return {"nll": nll / self.images_per_update / self.engine_scale}, nll.detach()

    def tally(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """The summed loss of the micro-batch: darknet prints an update's sum over its images."""
        return {"nll": outputs.item()}

    def evaluator(self) -> "TopK":
        return TopK(self.top, self.k)


class AsIs(nn.Module):
    """The engine's place for on-device normalisation: darknet's images arrive as the net's input
    already (darknet's own crop and scaling to [0, 1]), so nothing is done to them."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x


class TopK(Evaluator):
    """Counts the images whose label is among the ``k`` most probable classes (an image without a
    label, -1, never is: darknet counts it as wrong)."""

    def __init__(self, top: int, k: int) -> None:
        self.top, self.k = top, k
        self.hits = self.count = 0

    def update(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> None:
        best = torch.topk(model(images), self.k, dim=1).indices
        self.hits += int((best == batch.labels[:, None]).any(dim=1).sum())
        self.count += batch.labels.numel()

    def compute(self) -> "TopKReport":
        return TopKReport(self.top, self.hits, self.count)


class TopKReport(Report):
    """AlexeyAB's ``accuracy topN`` line; ``top`` is the .data ``top=`` it names."""

    def __init__(self, top: int, hits: int, count: int) -> None:
        self.top, self.hits, self.count = top, hits, count

    @property
    def primary(self) -> float:
        return self.hits / max(1, self.count)

    def record(self) -> dict[str, float]:
        return {f"val_top{self.top}": self.primary}

    def line(self) -> str:
        return f" TOP calculation...\n\n accuracy top{self.top} = {self.primary:f} "

    def headline(self) -> str:
        return f"top-{self.top} {self.primary:f}"

    def table(self) -> str:
        return self.line()

    def to_dict(self) -> dict:
        return {"top": self.top, "hits": self.hits, "count": self.count, "accuracy": self.primary}

    def summary(self) -> dict[str, float]:
        return self.record()
