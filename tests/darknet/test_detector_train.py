"""``cnnlab darknet detector train``: the guard rails darknet lacks (each with its exact message), the
backups each flavor writes, and a short run on the generated shapes set whose loss and mAP move the
right way and whose weights give the same mAP in ``detector map`` as during training."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from cnnlab.darknet.detector_train import check_detector_job, plan_detector_backups
from cnnlab.darknet.train import check_job
from cnnlab.data.shapes import ShapesSpec, make_shapes
from cnnlab.errors import CnnlabError

RECIPE = Path(__file__).parents[2] / "cnnlab" / "recipes" / "yolov3-tiny-shapes.cfg"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shapes set (its .data file), with the backup folder its backup= names (the README's
    walkthrough trains into it next)."""
    out = tmp_path_factory.mktemp("shapes")
    data = make_shapes(out, ShapesSpec(train=24, valid=8, size=96, seed=3))
    assert (out / "backup").is_dir()
    return data


def _classification_data(tmp_path: Path, shapes: Path) -> Path:
    (tmp_path / "labels.txt").write_text("disk\nsquare\ntriangle\n")
    data = tmp_path / "cls.data"
    data.write_text(f"classes=3\ntrain={shapes.parent}/train.txt\nlabels={tmp_path}/labels.txt\ntop=2\nbackup={tmp_path}\n")
    return data


def _error(check, *args: object) -> str:
    """The one-line message ``check(*args)`` stops with."""
    with pytest.raises(CnnlabError) as e:
        check(*args)
    return str(e.value)


def _classifier_cfg(tmp_path: Path) -> Path:
    cfg = tmp_path / "cls.cfg"
    cfg.write_text("[net]\nwidth=16\nheight=16\nchannels=3\nbatch=2\nmax_batches=2\n[convolutional]\nfilters=3\nsize=1\n[avgpool]\n[softmax]\n")
    return cfg


def _with_backup(tmp_path: Path, shapes: Path) -> tuple[Path, Path]:
    """A copy of the shapes .data whose backup= is a fresh folder under ``tmp_path``: (.data, backup)."""
    backup = tmp_path / "backup"
    backup.mkdir()
    data = tmp_path / "s.data"
    data.write_text(re.sub(r"backup=.*", f"backup={backup}", shapes.read_text()))
    return data, backup


def test_classification_data_with_a_detector_cfg_is_one_line(tmp_path: Path, shapes: Path) -> None:
    data = _classification_data(tmp_path, shapes)
    assert _error(check_detector_job, str(data), str(RECIPE), "alexeyab", None, False) == (
        f"{data} is a classification .data file (labels=, no names=) but {RECIPE} is a detector; give a detection .data "
        "(classes=, train=, valid=, names=, backup=) whose images have YOLO .txt labels"
    )


def test_classifier_cfg_in_detector_train_is_one_line(tmp_path: Path, shapes: Path) -> None:
    cfg = _classifier_cfg(tmp_path)
    assert _error(check_detector_job, str(shapes), str(cfg), "alexeyab", None, False) == f"{cfg} has no [yolo] or [region] layer: it is a classifier; train it with `cnnlab darknet classifier train`"


def test_detection_data_in_classifier_train_is_one_line(tmp_path: Path, shapes: Path) -> None:
    cfg = _classifier_cfg(tmp_path)
    assert _error(check_job, str(shapes), str(cfg), "pjreddie", None, False) == (
        f"{shapes} is a detection .data file (names=, and its images have YOLO .txt labels) but {cfg} is a classifier; "
        "train it with `cnnlab darknet detector train`, or give a classification .data (labels=) whose folders name the classes"
    )


def test_names_must_match_the_detection_classes(tmp_path: Path, shapes: Path) -> None:
    names = tmp_path / "two.names"
    names.write_text("disk\nsquare\n")
    data = tmp_path / "two.data"
    data.write_text(shapes.read_text().replace(f"names={shapes.parent}/shapes.names", f"names={names}"))
    assert _error(check_detector_job, str(data), str(RECIPE), "alexeyab", None, False) == f"{data}: the names list has 2 lines but {RECIPE}'s last detection layer has classes=3; make them equal"


def test_alexeyab_backups(tmp_path: Path) -> None:
    plan = plan_detector_backups("alexeyab", tmp_path, "net", 0, 2300, 1000, 100)
    last = tmp_path / "net_last.weights"
    assert plan.saves[100] == [last] and plan.saves[200] == [last]
    assert plan.saves[1000] == [tmp_path / "net_1000.weights", last]
    assert sorted(plan.saves) == list(range(100, 2301, 100))
    assert plan.final == tmp_path / "net_final.weights"
    resumed = plan_detector_backups("alexeyab", tmp_path, "net", 150, 420, 1000, 100)
    assert sorted(resumed.saves) == [200, 300, 400]  # every 100th (and 100 after the start)


def test_pjreddie_backups(tmp_path: Path) -> None:
    plan = plan_detector_backups("pjreddie", tmp_path, "net", 0, 1200, 1000, 100)
    assert plan.saves[100] == [tmp_path / "net.backup", tmp_path / "net_100.weights"]
    assert plan.saves[1100] == [tmp_path / "net.backup"]  # numbered files: below 1000, then every 10000
    assert plan.final == tmp_path / "net_final.weights"


def test_existing_weights_are_not_overwritten(tmp_path: Path, shapes: Path) -> None:
    from cnnlab.darknet.detector_train import train_detector

    data, backup = _with_backup(tmp_path, shapes)
    (backup / "yolov3-tiny-shapes_final.weights").write_bytes(b"mine")
    with pytest.raises(CnnlabError, match=r"yolov3-tiny-shapes_final.weights exists; pass --force to overwrite"):
        train_detector(str(data), str(RECIPE), max_batches=2)
    assert (backup / "yolov3-tiny-shapes_final.weights").read_bytes() == b"mine"
    shutil.rmtree(backup)


def test_unimplemented_training_keys_are_named(tmp_path: Path, shapes: Path) -> None:
    import io

    from cnnlab.darknet.detector_train import train_detector

    text = RECIPE.read_text().replace("angle=0", "angle=0\nmixup=1\nadam=1", 1).replace("truth_thresh = 1", "truth_thresh = 1\nmap=data/coco9k.map", 1)
    cfg = tmp_path / "keys.cfg"
    cfg.write_text(text)
    data, backup = _with_backup(tmp_path, shapes)
    err = io.StringIO()
    train_detector(str(data), str(cfg), max_batches=1, out=io.StringIO(), err=err)
    lines = [line for line in err.getvalue().splitlines() if "is not implemented" in line]
    n = text.splitlines().index
    assert lines == [
        f"warning: [net] mixup=1 ({cfg}:{n('mixup=1') + 1}) is not implemented by cnnlab's detector training and is ignored",
        f"warning: [net] adam=1 ({cfg}:{n('adam=1') + 1}) is not implemented by cnnlab's detector training and is ignored",
        f"warning: [yolo] map=data/coco9k.map ({cfg}:{n('map=data/coco9k.map') + 1}) is not implemented by cnnlab's detector training and is ignored",
    ]


def test_a_diverging_run_stops_with_the_step_the_layer_and_the_cause(tmp_path: Path, shapes: Path) -> None:
    from cnnlab.darknet.detector_train import train_detector
    from cnnlab.errors import NonFiniteLoss

    cfg = tmp_path / "hot.cfg"
    cfg.write_text(RECIPE.read_text().replace("burn_in=100", "burn_in=0").replace("learning_rate=0.005", "learning_rate=1000").replace("batch=16", "batch=4"))
    data, backup = _with_backup(tmp_path, shapes)
    import io

    with pytest.raises(NonFiniteLoss) as e:
        train_detector(str(data), str(cfg), max_batches=20, out=io.StringIO(), err=io.StringIO())
    assert re.fullmatch(
        r"optimizer step \d+ \(epoch 1\): \[yolo\] layer 16: the IoU or the deltas are not finite \(darknet would print "
        r"'IOU = -nan' and go on\): the layer's output is already not finite, so training diverged; the learning rate is "
        r"most likely too high for this network without a warm-up: set burn_in=1000 in \[net\] or lower learning_rate",
        str(e.value),
    )
    assert not list(backup.iterdir())  # nothing saved from the diverged run


SMALL = {  # the recipe at 96 px (anchors scaled with it), a few updates with a short warm-up
    "width=160": "width=96", "height=160": "height=96", "batch=16": "batch=8", "burn_in=100": "burn_in=5",
    "learning_rate=0.005": "learning_rate=0.004",
}


def _small_cfg(tmp_path: Path) -> Path:
    text = RECIPE.read_text()
    for old, new in SMALL.items():
        assert old in text
        text = text.replace(old, new)

    def scaled(m: re.Match) -> str:
        return "anchors = " + ", ".join(str(round(float(v) * 96 / 160)) for v in m.group(1).split(","))

    cfg = tmp_path / "small.cfg"
    cfg.write_text(re.sub(r"^anchors\s*=\s*(.*)$", scaled, text, flags=re.M))
    return cfg


def test_short_run_learns_and_its_weights_give_the_same_map(tmp_path: Path, shapes: Path) -> None:
    """Acceptance 1 (short) and 4: loss and mAP move the right way; the final .weights give in
    `detector map` the mAP printed during training, and load in `detector test`. 300 updates: darknet's
    BatchNorm keeps 1 % of each batch's statistics, so fewer leave the rolling statistics (which
    evaluation uses) far from the batch statistics the net trained with (0.99^300 ≈ 5 % left)."""
    import io

    from cnnlab.darknet.detector_programs import detector_map
    from cnnlab.darknet.detector_train import train_detector
    from cnnlab.darknet.model import load_darknet
    from cnnlab.darknet.programs import detector_test

    cfg = _small_cfg(tmp_path)
    data, backup = _with_backup(tmp_path, shapes)  # measured on its own training images: a short run can only learn those
    data.write_text(re.sub(r"valid=.*", f"valid={shapes.parent}/train.txt", data.read_text()))
    untrained = tmp_path / "untrained.weights"  # the weights the run starts from (same seed)
    torch.manual_seed(0)
    load_darknet(str(cfg), None, "alexeyab").save_weights(untrained)
    before = detector_map(data=str(data), cfg=str(cfg), weights=str(untrained), out=io.StringIO(), err=io.StringIO())

    out = io.StringIO()
    final = train_detector(str(data), str(cfg), flavor="alexeyab", max_batches=300, calc_map=True, out=out, err=io.StringIO())
    text = out.getvalue()
    avg = [float(v) for v in re.findall(r"^ \d+: [-\d.]+, ([-\d.]+) avg loss", text, re.M)]
    assert len(avg) == 300 and avg[-1] < 0.5 * avg[0], avg
    printed = re.findall(r"mean average precision \(mAP@0\.50\) = ([\d.]+)", text)[-1]
    after = detector_map(data=str(data), cfg=str(cfg), weights=str(final), out=io.StringIO(), err=io.StringIO())
    assert f"{after.map:f}" == printed  # the same figure through the program as during training
    assert after.map > before.map + 0.1, (before.map, after.map)  # measured: 0.002 → 0.17
    shown = io.StringIO()
    detector_test(data=str(data), cfg=str(cfg), weights=str(final), image=str(shapes.parent / "valid" / "000000.jpg"),
                  thresh=0.25, flavor="alexeyab", out_name=str(tmp_path / "pred"), out=shown, err=io.StringIO())
    assert "Predicted in" in shown.getvalue()


def test_last_weights_resume_the_counter(tmp_path: Path, shapes: Path) -> None:
    """`_last.weights` (here every 2 updates: .data savelast=2) carries `seen`; passed as WEIGHTS, the run
    continues at the next update and ends where the cfg says."""
    import io

    from cnnlab.darknet.detector_train import train_detector
    from cnnlab.darknet.weights import WeightsHeader

    def seen(path: Path) -> int:
        return WeightsHeader.parse(path.read_bytes()[:20], "alexeyab", str(path)).seen

    cfg = _small_cfg(tmp_path)
    backup = tmp_path / "backup"
    backup.mkdir()
    data = tmp_path / "s.data"
    data.write_text(re.sub(r"backup=.*", f"backup={backup}", shapes.read_text()) + "savelast=2\nsaveweights=1000\n")
    train_detector(str(data), str(cfg), flavor="alexeyab", max_batches=3, out=io.StringIO(), err=io.StringIO())
    last = backup / "small_last.weights"
    assert seen(last) == 2 * 8  # written after update 2 (batch 8)
    out = io.StringIO()
    final = train_detector(str(data), str(cfg), str(last), flavor="alexeyab", max_batches=5, force=True, out=out, err=io.StringIO())
    updates = [int(n) for n in re.findall(r"^ (\d+): ", out.getvalue(), re.M)]
    assert updates == [3, 4, 5]
    assert seen(final) == 5 * 8
