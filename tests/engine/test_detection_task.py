"""``cnnlab train --task detect``: the darknet detector through the engine's front door — run folder,
checkpoints, per-epoch mAP, and an exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.data.shapes import ShapesSpec, make_shapes

RECIPE = Path(__file__).parents[2] / "cnnlab" / "recipes" / "yolov3-tiny-shapes.cfg"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("shapes"), ShapesSpec(train=16, valid=4, size=64, seed=5))


def _small_cfg(tmp_path: Path) -> Path:
    cfg = tmp_path / "det.cfg"
    cfg.write_text(RECIPE.read_text().replace("width=160", "width=64").replace("height=160", "height=64"))
    return cfg


def _train(cfg: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--task", "detect", "--model", f"darknet:{cfg}", "--data", str(data), "--batch-size", "4",
                 "--lr", "0.001", "--sched", "constant", "--amp", "off", "--workers", "0", "--no-progress", "--out", str(out), *extra])  # fmt: skip


def test_detect_task_trains_checkpoints_and_resumes_exactly(tmp_path: Path, shapes: Path) -> None:
    cfg = _small_cfg(tmp_path)
    assert _train(cfg, shapes, tmp_path / "whole", "--epochs", "2") == 0
    lines = [json.loads(s) for s in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if "val_map" in r]
    assert len(epochs) == 2 and all(0.0 <= r["val_map"] <= 1.0 for r in epochs)
    assert epochs[1]["train_cost"] < epochs[0]["train_cost"]

    assert _train(cfg, shapes, tmp_path / "split", "--epochs", "1") == 0  # stopped after one epoch (constant rate) ...
    assert main(["train", "--resume", str(tmp_path / "split"), "--epochs", "2", "--no-progress"]) == 0  # ... and resumed
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    split = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    assert whole.keys() == split.keys()
    assert all(torch.equal(whole[k], split[k]) for k in whole if isinstance(whole[k], torch.Tensor))


def test_classification_data_with_detect_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--task", "detect", "--model", f"darknet:{_small_cfg(tmp_path)}", "--data", "digits",
                 "--out", str(tmp_path / "r")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cnnlab train: error: --task detect needs a detection source (a darknet .data file with YOLO labels, or a VOC folder)"]


def _shapes_as_voc(data: Path, root: Path) -> Path:
    """The shapes set rewritten as a PASCAL VOC folder: corner boxes in 1-based pixels, as VOC stores them."""
    from PIL import Image

    names = (data.parent / "shapes.names").read_text().split()
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for listing, split in (("train.txt", "train"), ("valid.txt", "val")):
        ids = []
        for line in (data.parent / listing).read_text().split():
            image = Path(line)
            w, h = Image.open(image).size
            objects = ""
            for row in (image.with_suffix(".txt")).read_text().splitlines():
                c, xc, yc, bw, bh = (float(v) for v in row.split())
                box = [(xc - bw / 2) * w + 1, (yc - bh / 2) * h + 1, (xc + bw / 2) * w + 1, (yc + bh / 2) * h + 1]
                objects += (f"<object><name>{names[int(c)]}</name><difficult>0</difficult><bndbox><xmin>{box[0]:.1f}</xmin>"
                            f"<ymin>{box[1]:.1f}</ymin><xmax>{box[2]:.1f}</xmax><ymax>{box[3]:.1f}</ymax></bndbox></object>")  # fmt: skip
            (root / "Annotations" / f"{image.stem}.xml").write_text(
                f"<annotation><size><width>{w}</width><height>{h}</height></size>{objects}</annotation>")  # fmt: skip
            (root / "JPEGImages" / f"{image.stem}.jpg").write_bytes(image.read_bytes())
            ids.append(image.stem)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
    return root


def test_a_voc_folder_trains_the_same_as_its_yolo_labels(tmp_path: Path, shapes: Path) -> None:
    from cnnlab.data.detection_sets import open_detection_split

    voc = _shapes_as_voc(shapes, tmp_path / "VOC")
    yolo, pascal = open_detection_split(str(shapes), "val"), open_detection_split(str(voc), "val")
    assert pascal.classes == yolo.classes and len(pascal) == len(yolo)
    for i in range(len(yolo)):  # VOC's 1-based corners come back as the YOLO labels they were written from
        torch.testing.assert_close(torch.as_tensor(pascal.boxes(i)), torch.as_tensor(yolo.boxes(i)), atol=2e-3, rtol=0)
    assert _train(_small_cfg(tmp_path), voc, tmp_path / "run", "--epochs", "1") == 0
    trained = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    # cnnlab valid opens the folder as the run's task does (numbering its classes as the run's)
    assert main(["valid", "--checkpoint", str(tmp_path / "run"), "--no-progress"]) == 0
    assert abs(json.loads((tmp_path / "run" / "valid-val.json").read_text())["val_map"] - trained["val_map"]) < 0.02


def test_a_voc_folder_for_classification_is_one_line(tmp_path: Path, shapes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    voc = _shapes_as_voc(shapes, tmp_path / "VOC")
    assert main(["train", "--model", "lenet5", "--data", str(voc), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"cnnlab train: error: {voc} is a PASCAL VOC folder (boxes, not classes): train a detector on it with --task detect"


def test_valid_and_predict_serve_a_detection_run(tmp_path: Path, shapes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``cnnlab valid`` scores the run by mAP as its training did; ``cnnlab predict`` prints the boxes
    ``cnnlab darknet detector test -ext_output`` prints for the same network saved as .weights."""
    from cnnlab.darknet.detector_task import darknet_net
    from cnnlab.engine.checkpoint import resolve_path
    from cnnlab.models import create_model

    cfg, run = _small_cfg(tmp_path), tmp_path / "run"
    assert _train(cfg, shapes, run, "--epochs", "2") == 0
    capsys.readouterr()
    assert main(["valid", "--checkpoint", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mean average precision (mAP@0.50)" in out and "name = disk" in out
    best = max(json.loads(s)["val_map"] for s in (run / "metrics.jsonl").read_text().splitlines() if "val_map" in s)
    scored = json.loads((run / "valid-val.json").read_text())
    assert scored["count"] == 4 and abs(scored["val_map"] - best) < 0.02  # best.pt's epoch; folded BN rounds a little differently

    ckpt = torch.load(resolve_path(run), map_location="cpu", weights_only=False)  # what --checkpoint RUN loads (best.pt)
    model = create_model(f"darknet:{cfg}", num_classes=3, flavor="alexeyab")
    model.load_state_dict(ckpt["model"])
    darknet_net(model).save_weights(tmp_path / "det.weights")
    image = sorted((shapes.parent / "valid").glob("*.jpg"))[0]
    for thresh in ("0.25", "0.02"):
        assert main(["darknet", "detector", "test", str(shapes), str(cfg), str(tmp_path / "det.weights"), str(image), "--flavor", "alexeyab",
                     "-ext_output", "-thresh", thresh, "-out", str(tmp_path / "pred"), "--force", "--threads", "1"]) == 0  # fmt: skip
        darknet = capsys.readouterr().out.splitlines()
        # one thread each: the same reduction order, so a box at the threshold falls the same way in both
        assert main(["predict", "--checkpoint", str(run), str(image), "--thresh", thresh, "--threads", "1"]) == 0
        ours = capsys.readouterr().out.splitlines()
        start = next(i for i, line in enumerate(darknet) if "Predicted in" in line) + 1
        assert ours[1:] == darknet[start:]
    assert len(ours) > 2  # at thresh .02 the barely trained net finds boxes: the comparison is not vacuous
    assert main(["predict", "--checkpoint", str(run), str(image), "--thresh", "0.02", "--format", "json"]) == 0
    boxes = json.loads(capsys.readouterr().out)[0]["boxes"]
    assert len(boxes) == len(ours) - 1 and all(0 <= b["box"][0] <= b["box"][2] <= 64 for b in boxes)


def test_a_detector_trains_with_its_cfgs_learning_rate_unless_told(tmp_path: Path, shapes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The engine's defaults are a classifier's (SGD at 0.1): a YOLO loss sums over boxes and diverged
    within 8 steps at that rate. A detector takes lr, momentum, decay and batch from its cfg's [net]."""
    import yaml

    cfg = _small_cfg(tmp_path)
    args = ["train", "--task", "detect", "--model", f"darknet:{cfg}", "--data", str(shapes), "--epochs", "1", "--amp", "off",
            "--workers", "0", "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert f"detect: from the [net] of {cfg}: --lr 0.005, --momentum 0.9, --weight-decay 0.0005, --batch-size 16, --warmup-epochs 2.0" in out
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert (saved["lr"], saved["weight_decay"], saved["batch_size"], saved["warmup_epochs"]) == (0.005, 0.0005, 16, 2.0)
    assert main([*args, "--lr", "0.002", "--batch-size", "4", "--out", str(tmp_path / "b")]) == 0
    assert "--lr" not in capsys.readouterr().out.split("(set them")[0].split("[net]")[-1]
    saved = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert (saved["lr"], saved["batch_size"], saved["weight_decay"]) == (0.002, 4, 0.0005)


def test_detection_data_without_task_detect_says_how_it_is_read(tmp_path: Path, shapes: Path, capsys) -> None:
    """A forgotten --task detect trained a classifier on each image's first box without a word."""
    code = main(["train", "--model", "lenet5", "--data", str(shapes), "--epochs", "1", "--batch-size", "8", "--workers", "0",
                 "--no-progress", "--out", str(tmp_path / "cls")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    assert "is detection data (boxes): each image is labelled by its first box's class" in captured.out + captured.err
    assert "pass --task detect" in captured.out + captured.err
