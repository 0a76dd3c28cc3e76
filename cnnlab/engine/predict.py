"""Prediction on image files with exactly the preprocessing ``valid`` uses: a classifier's top
classes by probability, or an embedding model's unit embedding and its nearest class centres.

``cnnlab predict`` knows only the :class:`Predicts` and :class:`Output` protocols: a task's
:meth:`~cnnlab.engine.task.Task.predictor` returns something that turns an image into an output
that renders itself as text, JSON and CSV rows, so a new task (boxes, say) brings its own."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from cnnlab.data.sources.base import BadImage
from cnnlab.data.transforms import DeviceNormalize, eval_transform
from cnnlab.model_meta import Preprocess


class Output(Protocol):
    """One image's prediction, as ``cnnlab predict`` prints it."""

    def text(self) -> str: ...
    def to_json(self) -> dict: ...
    def csv_rows(self) -> list[list]: ...


class Predicts(Protocol):
    """``predictor(path, top, data)`` → an :class:`Output` (raises BadImage for an unreadable image)."""

    csv_header: list[str]

    def __call__(self, path: str, top: int = 5, data: bytes | None = None) -> Output: ...


@dataclass
class Prediction:
    path: str
    seconds: float  # network time, as darknet reports it
    top: list[tuple[str, int, float]]  # (label, class index, probability; for an embedding, cosine similarity to the class centre)
    embedding: list[float] | None = None  # the unit embedding (embedding models only)

    def text(self) -> str:
        """darknet's ``classifier predict`` layout: the time, then ``%5.2f%%: label`` per class (for an
        embedding, the cosine similarity to each nearest class centre, ``0.9731: label``)."""
        lines = [f"{self.path}: Predicted in {self.seconds:f} seconds."]
        if self.embedding is None:
            lines += [f"{100 * prob:5.2f}%: {label}" for label, _, prob in self.top]
        else:
            lines += [f"{sim:6.4f}: {label}" for label, _, sim in self.top]
        return "\n".join(lines)

    def to_json(self) -> dict:
        """A classifier's ``top`` classes by probability; an embedding model's ``embedding`` and
        ``nearest`` classes by cosine similarity to their centres."""
        classes = [{"label": label, "index": i, _score(self.embedding is not None): p} for label, i, p in self.top]
        if self.embedding is None:
            return {"path": self.path, "seconds": self.seconds, "top": classes}
        return {"path": self.path, "seconds": self.seconds, "embedding": self.embedding, "nearest": classes}

    def csv_rows(self) -> list[list]:
        return [[self.path, rank, label, index, f"{p:.6f}"] for rank, (label, index, p) in enumerate(self.top, 1)]


def _score(embedding: bool) -> str:
    return "similarity" if embedding else "probability"


class Predictor:
    def __init__(
        self, model: nn.Module, classes: list[str], pre: Preprocess, device: torch.device, centres: torch.Tensor | None = None
    ) -> None:  # fmt: skip
        """``centres``: (C, D) unit class centres of an embedding model; None for a classifier."""
        self.model = model.to(device).eval()
        self.classes, self.device = classes, device
        self.centres = centres.to(device).float() if centres is not None else None
        self.transform = eval_transform(pre)
        self.normalize = DeviceNormalize(pre).to(device).eval()
        self.csv_header = ["path", "rank", "label", "index", _score(centres is not None)]

    def load(self, path: str, data: bytes | None = None) -> torch.Tensor:
        """The network input of the file ``path`` or of the encoded image ``data``, (C, H, W) uint8:
        decoding only, so it can run ahead of the network (raises BadImage for an unreadable image)."""
        from cnnlab.data.images import decode_image

        return self.transform(decode_image(Path(path) if data is None else data))

    @torch.no_grad()
    def __call__(self, path: str, top: int = 5, data: bytes | None = None) -> Prediction:
        """Classify the file ``path``, or the encoded image ``data`` (a shard sample) named ``path``."""
        return self.from_image(path, self.load(path, data), top)

    @torch.no_grad()
    def from_image(self, path: str, image: torch.Tensor, top: int = 5) -> Prediction:
        """Classify an image :meth:`load` returned."""
        x = self.normalize(image.unsqueeze(0).to(self.device))  # (1, C, H, W)
        t0 = time.perf_counter()
        out = self.model(x).float()[0]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        embedding = None
        if self.centres is None:
            scores = out.softmax(0)
        else:  # cosine similarity of the unit embedding to each class centre
            emb = torch.nn.functional.normalize(out, dim=0)
            scores, embedding = self.centres @ emb, emb.tolist()
        values, indices = scores.topk(min(top, len(self.classes)))
        return Prediction(path, seconds, [(self.classes[i], i, v) for v, i in zip(values.tolist(), indices.tolist())], embedding)


def format_darknet(p: Prediction) -> str:
    """darknet's ``classifier predict`` layout (:meth:`Prediction.text`)."""
    return p.text()


__all__ = ["BadImage", "Output", "Prediction", "Predictor", "Predicts", "format_darknet"]
