"""What a finished run leaves behind, and what predict prints (darknet's layout)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import yaml


def test_run_directory_holds_everything_the_issue_lists(tiny_run: Path) -> None:
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "valid.json", "curves.png", "confusion_matrix.png",
                 "checkpoints/last.pt", "checkpoints/best.pt"):  # fmt: skip
        assert (tiny_run / name).is_file(), name
    assert list((tiny_run / "tb").glob("events.out.tfevents.*"))
    summary = json.loads((tiny_run / "summary.json").read_text())
    for key in ("top1", "top5", "loss", "epochs", "train_seconds", "images_per_second"):
        assert isinstance(summary[key], (int, float)), key
    assert 0 <= summary["top1"] <= summary["top5"] <= 100
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == summary["epochs"] == 1
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert cfg["model"] == "lenet5" and cfg["train_limit"] == 160 and "cnnlab_version" in cfg
    ckpt = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["classes"] == [str(i) for i in range(10)]
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_predict_prints_darknet_lines(cli, tiny_run: Path, tmp_path: Path) -> None:
    assert cli("datasets", "digits", "--export", tmp_path, "--split", "val", "--per-class", "1", "--limit", "2").code == 0
    images = sorted(tmp_path.glob("val/*/*.png"))
    assert len(images) == 2
    r = cli("predict", "-c", tiny_run, *images)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert len(lines) == 2 * 6
    for block in (lines[:6], lines[6:]):
        assert re.fullmatch(r".+\.png: Predicted in \d+\.\d{6} seconds\.", block[0]), block[0]
        percents = []
        for line in block[1:]:
            m = re.fullmatch(r"\s*(\d+\.\d\d)%: (\d)", line)
            assert m, line
            percents.append(float(m.group(1)))
        assert percents == sorted(percents, reverse=True) and sum(percents) <= 100.01
    r = cli("predict", "-c", tiny_run, "--format", "json", images[0])
    doc = json.loads(r.out)
    assert [t["label"] for t in doc[0]["top"]] == [l.split(": ")[1] for l in lines[1:6]]
