"""The classification report's printed lines: top-5 only where it can be below 100 %."""

from __future__ import annotations

import torch

from cnnlab.metrics import ClassificationReport, build_metrics


def _report(num_classes: int) -> ClassificationReport:
    torch.manual_seed(0)
    metrics = build_metrics(num_classes)
    metrics.update(torch.randn(64, num_classes), torch.randint(0, num_classes, (64,)))
    return ClassificationReport.from_metrics(metrics.compute(), 0.5, [f"c{i}" for i in range(num_classes)])


def test_five_classes_or_fewer_print_no_top5() -> None:
    for n in (2, 5):
        report = _report(n)
        assert report.top5 == 100.0  # every label is in the top five
        for text in (report.line(), report.headline(), report.table()):
            assert "top-5" not in text and "top-1" in text
        assert "val_top5" not in report.record() and "val_top1" in report.record()


def test_more_classes_print_top5() -> None:
    report = _report(10)
    assert report.top5 < 100.0
    for text in (report.line(), report.headline(), report.table()):
        assert f"top-5 {report.top5:.2f}%" in text
    assert report.record()["val_top5"] == report.top5
