"""The task interface: what the engine asks of a kind of problem, so that the loop never names one.

A :class:`Task` says what a sample's target is (a class index; boxes for detection), how a model is
built for it, the loss as a dict of named terms (their sum is optimised, each is logged, as in
detectron2's ``run_step``), what running figures training keeps, and which :class:`Evaluator`
measures it. An evaluator's :class:`Report` knows its one-line summary, its table, its JSON and
the figure that picks ``best.pt``. For a trained model, the task also says what ``cnnlab valid``
scores (:meth:`Task.evaluation`) and what ``cnnlab predict`` prints (:meth:`Task.predictor`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from cnnlab.data.loader import Batch
from cnnlab.data.sources.base import ImageSource
from cnnlab.errors import CnnlabError
from cnnlab.model_meta import Preprocess
from cnnlab.registry import Registry

if TYPE_CHECKING:
    from cnnlab.engine.predict import Predicts


class Report(ABC):
    """The result of one evaluation pass."""

    count: int  # samples evaluated (over every rank)

    @property
    @abstractmethod
    def primary(self) -> float:
        """The figure ``best.pt`` is chosen by (higher is better)."""

    @abstractmethod
    def record(self) -> dict[str, float]:
        """Flat ``val_*`` figures for ``metrics.jsonl`` and TensorBoard."""

    @abstractmethod
    def line(self) -> str:
        """The evaluation part of an epoch's console line."""

    @abstractmethod
    def headline(self) -> str:
        """The final figures in a few words, for the line ``cnnlab train`` ends with."""

    @abstractmethod
    def table(self) -> str:
        """``cnnlab valid``'s printout."""

    @abstractmethod
    def to_dict(self) -> dict:
        """The full report, JSON-ready (``valid.json``)."""

    @abstractmethod
    def summary(self) -> dict[str, float]:
        """The headline figures for ``summary.json``."""

    def figures(self, run_dir: Path) -> None:
        """Plots of the report in the run directory (none by default)."""


class Evaluator(ABC):
    """Accumulates one pass over a validation loader; :meth:`compute` is collective over ranks."""

    @abstractmethod
    def update(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> None:
        """``images`` are normalised, on the device; ``batch`` carries targets and indices."""

    @abstractmethod
    def compute(self) -> Report:
        """The report over every rank's samples (each sample counted once)."""


class Task(ABC):
    """One kind of problem the engine trains."""

    name: ClassVar[str]
    checkpoint_key: ClassVar[str] = "task"
    # what the message of a NaN/inf loss advises: the options of the command that trains the task
    nonfinite_advice: ClassVar[str] = "lower --lr, set --clip-grad, or check the data"

    def __init__(self, classes: list[str], device: torch.device) -> None:
        self.classes, self.device = list(classes), device

    @abstractmethod
    def build_model(self, model: str, model_kwargs: dict) -> nn.Module:
        """A new network for this task (a resumed run rebuilds it from its checkpoint instead)."""

    def check_model(self, model: nn.Module) -> None:
        """Refuse, in one line, a network this task cannot train (e.g. a detector for classification)."""

    def targets(self, batch: Batch) -> Any:
        """The batch's targets on the device (class indices by default)."""
        return batch.labels.to(self.device, non_blocking=True)

    @abstractmethod
    def losses(self, model: nn.Module, images: torch.Tensor, targets: Any) -> tuple[dict[str, torch.Tensor], Any]:
        """Named loss terms (fp32 scalars; their sum is optimised) and the outputs for :meth:`tally`."""

    def tally(self, outputs: Any, targets: Any) -> dict[str, float]:
        """Sums kept over a training epoch (e.g. correct predictions); :meth:`train_record` reads them."""
        return {}

    def train_record(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        """``train_*`` figures of an epoch from the sums of :meth:`tally`."""
        return {}

    def train_line(self, record: dict[str, float]) -> str:
        """The training part of an epoch's console line (after the loss)."""
        return ""

    @abstractmethod
    def evaluator(self) -> Evaluator:
        """A fresh evaluator for one pass."""

    def loaders(self, cfg: Any, data: Any, model: nn.Module, rank: int, world: int, pin: bool) -> tuple | None:
        """The task's own ``(train, val)`` loaders (e.g. images resized with their boxes), or None for
        the engine's image loaders."""
        return None

    def extra_state(self, model: nn.Module, loader_factory: Any) -> dict:
        """Anything besides the weights that using the model later needs (saved in the checkpoint)."""
        return {}

    # --- using a trained model (``cnnlab valid`` / ``cnnlab predict``; see :func:`inference_task`)

    def open_data(self, spec: str, split: str) -> ImageSource:
        """``cnnlab valid``: the ``split`` of ``--data`` as this task reads it."""
        from cnnlab.data.datasets import open_split

        return open_split(spec, split)

    def evaluation(self, source: ImageSource) -> tuple[ImageSource, Evaluator]:
        """``cnnlab valid``: the labelled set as this task scores it, and a fresh evaluator for it. By
        default the set's classes are mapped onto the model's (one the model lacks is an error naming it)."""
        from cnnlab.data.sources.remap import RemappedSource

        return RemappedSource.to_classes(source, self.classes), self.evaluator()

    def eval_loader(self, source: Any, model: nn.Module, batch_size: int, workers: int, pin: bool) -> Any | None:
        """``cnnlab valid``: the task's own loader for ``source`` (e.g. images resized with their
        boxes), or None for the engine's image loader with the model's preprocessing."""
        return None

    def predictor(self, model: nn.Module, pre: Preprocess, device: torch.device, ckpt: dict, where: str) -> Predicts:
        """``cnnlab predict``: what turns one image into an output (``ckpt`` holds the task's saved state;
        ``where`` names it in messages)."""
        raise CnnlabError(f"cnnlab predict has no output for {self.name!r} models yet; use cnnlab valid")


# Task builders ``(cfg, train_source, device) -> Task`` by name (``cnnlab train --task NAME``); the
# implementations live in cnnlab/tasks/, one module each, registered with ``@TASKS.register(name)``.
# ``cfg`` is None when the task only evaluates or predicts (cnnlab valid / predict); ``source`` then
# holds only ``classes``, the model's (see :func:`inference_task`).
TASKS: Registry = Registry("task", listing=None)


# What a task sets in place of the engine's defaults, from the model name (``cnnlab train``: the
# dataclass defaults < these < the recipe < the command line): ``model -> (values, why)``; e.g. a darknet
# detector takes its learning rate from the cfg's [net], where the classifiers' 0.1 would diverge.
TASK_DEFAULTS: Registry = Registry("task defaults", listing=None)


def task_defaults(task: str, model: str) -> tuple[dict, str]:
    """``(config values, a line saying where they come from)`` for training ``model`` as ``task``; ``({}, "")`` if none."""
    import cnnlab.tasks  # noqa: F401  (registers the built-in tasks)

    return TASK_DEFAULTS.get(task)(model) if task in TASK_DEFAULTS else ({}, "")


def build_task(name: str, cfg: Any, source: Any, device: torch.device) -> Task:
    """The task ``name`` for a run on ``source`` (an ImageSource: its classes, and labels when needed)."""
    import cnnlab.tasks  # noqa: F401  (registers the built-in tasks)

    return TASKS.get(name)(cfg, source, device)


def task_of(ckpt: dict) -> str:
    """The task a checkpoint was trained for (checkpoints from before tasks existed: classification)."""
    return ckpt.get("task", "classify") if ckpt else "classify"


@dataclass
class ModelClasses:
    """The data a task built for inference knows: the classes its model was trained on."""

    classes: list[str]


def inference_task(ckpt: dict, classes: list[str], device: torch.device) -> Task:
    """The task ``cnnlab valid`` and ``cnnlab predict`` use a model by: its checkpoint's (classification
    for a plain state_dict), built without a training config, from the model's classes. The commands
    then only call :meth:`Task.evaluation` and :meth:`Task.predictor`, so a new task needs no edit there."""
    return build_task(task_of(ckpt), None, ModelClasses(list(classes)), device)
