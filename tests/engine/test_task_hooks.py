"""``cnnlab valid`` and ``cnnlab predict`` go through the checkpoint's task (``Task.evaluation``,
``Task.predictor``), so a task registered in TASKS plugs in without an edit to either command."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.engine.task import TASKS, Evaluator, Report, inference_task
from cnnlab.tasks.classification import Classification


@dataclass
class CountReport(Report):
    count: int
    classes: list[str]

    @property
    def primary(self) -> float:
        return float(self.count)

    def record(self) -> dict[str, float]:
        return {"val_count": self.count}

    def line(self) -> str:
        return f"counted {self.count}"

    headline = line

    def table(self) -> str:
        return f"toy report: {self.count} images of {len(self.classes)} classes ({', '.join(self.classes)})"

    def to_dict(self) -> dict:
        return {"count": self.count, "classes": self.classes}

    def summary(self) -> dict[str, float]:
        return self.record()


class CountEvaluator(Evaluator):
    def __init__(self, classes: list[str]) -> None:
        self.classes, self.count = classes, 0

    def update(self, model, images, batch) -> None:
        self.count += len(batch.labels)

    def compute(self) -> CountReport:
        return CountReport(self.count, self.classes)


@dataclass
class Mean:
    path: str
    value: float

    def text(self) -> str:
        return f"{self.path}: toy mean {self.value:.3f}"

    def to_json(self) -> dict:
        return {"path": self.path, "toy": self.value}

    def csv_rows(self) -> list[list]:
        return [[self.path, f"{self.value:.3f}"]]


class MeanPredictor:
    csv_header = ["path", "toy"]

    def __call__(self, path: str, top: int = 5, data: bytes | None = None) -> Mean:
        return Mean(path, 0.5)


class Toy(Classification):
    """Trains as a classifier; scores any labelled set by counting it (no class mapping) and predicts a constant."""

    name = "toy"

    def evaluation(self, source):
        return source, CountEvaluator(list(source.classes))

    def predictor(self, model, pre, device, ckpt, where):
        assert ckpt["task"] == "toy" and where.endswith("toy.pt")
        return MeanPredictor()


def _toy_checkpoint(tiny_run: Path, tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setitem(TASKS._entries, "toy", lambda cfg, source, device: Toy(list(source.classes), device))
    ckpt = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=False)
    ckpt["task"] = "toy"
    torch.save(ckpt, tmp_path / "toy.pt")
    return tmp_path / "toy.pt"


def test_inference_task_is_the_checkpoints_with_the_models_classes(tiny_run, tmp_path, monkeypatch) -> None:
    path = _toy_checkpoint(tiny_run, tmp_path, monkeypatch)
    task = inference_task(torch.load(path, weights_only=False), ["a", "b"], torch.device("cpu"))
    assert isinstance(task, Toy) and task.classes == ["a", "b"]
    assert type(inference_task({}, ["a", "b"], torch.device("cpu"))) is Classification  # a plain state_dict


def test_valid_scores_through_the_tasks_evaluation(cli, tiny_run, tmp_path, monkeypatch) -> None:
    path = _toy_checkpoint(tiny_run, tmp_path, monkeypatch)
    # classes the model never saw: classification would refuse them, the toy task counts them
    from tests.engine.test_bad_input import _jpeg

    for c in ("zebra", "okapi"):
        (tmp_path / "data" / "val" / c).mkdir(parents=True)
        (tmp_path / "data" / "train" / c).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / "val" / c / f"{i}.jpg").write_bytes(_jpeg((9 * i, 90, 200)))
        (tmp_path / "data" / "train" / c / "0.jpg").write_bytes(_jpeg((1, 2, 3)))
    r = cli("valid", "-c", path, "--data", tmp_path / "data", "--workers", "0", "--no-progress", "--json", tmp_path / "v.json")
    assert r.code == 0, r.err
    assert r.out.splitlines()[0] == "toy report: 6 images of 2 classes (okapi, zebra)"
    assert json.loads((tmp_path / "v.json").read_text())["count"] == 6


def test_predict_prints_what_the_tasks_predictor_returns(cli, tiny_run, tmp_path, monkeypatch) -> None:
    path = _toy_checkpoint(tiny_run, tmp_path, monkeypatch)
    image = tmp_path / "x.jpg"
    from tests.engine.test_bad_input import _jpeg

    image.write_bytes(_jpeg((10, 20, 30)))
    r = cli("predict", "-c", path, image)
    assert r.code == 0 and r.out.strip() == f"{image}: toy mean 0.500", r.err
    r = cli("predict", "-c", path, "--format", "json", image)
    assert json.loads(r.out) == [{"path": str(image), "toy": 0.5}]
    r = cli("predict", "-c", path, "--format", "csv", image)
    assert r.out.splitlines() == ["path,toy", f"{image},0.500"]
