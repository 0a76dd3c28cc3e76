"""``cnnlab darknet classifier train``: [net] hyper-parameters, lr policies, labels, backups, resume."""

from __future__ import annotations

import io
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.darknet import load_darknet
from cnnlab.darknet.cfg import parse_cfg
from cnnlab.darknet.schedule import NetTraining
from cnnlab.darknet.train import basecfg, label_of, plan_backups, train_classifier
from cnnlab.errors import CnnlabError

CFG = """[net]
batch=24
subdivisions=2
width=16
height=16
channels=3
learning_rate=0.1
momentum=0.9
decay=0.0005
policy=steps
steps=10,20
scales=.5,.1
max_batches=24
min_crop=16
max_crop=20

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=3
size=1
stride=1
activation=linear

[avgpool]

[softmax]
groups=1

[cost]
type=sse
"""
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
PROGRESS = re.compile(r"(\d+), (\d+\.\d{3}): (\d+\.\d{6}), (\d+\.\d{6}) avg, (\d+\.\d{6}) rate, \d+\.\d{6} seconds, (\d+) images")


def net_section(text: str):
    return parse_cfg("[net]\nwidth=1\nheight=1\nchannels=1\n" + text)[0]


def test_policies_are_darknets_get_current_rate() -> None:
    t = NetTraining.from_net(net_section("learning_rate=0.1\npolicy=steps\nsteps=10,20\nscales=.5,.1\nburn_in=4\npower=2\nmax_batches=30"))
    assert [t.rate(b) for b in (0, 2, 4, 9, 10, 19, 20)] == pytest.approx([0, 0.1 * 0.25, 0.1, 0.1, 0.05, 0.05, 0.005])
    t = NetTraining.from_net(net_section("learning_rate=0.1\npolicy=step\nstep=5\nscale=0.5"))
    assert [t.rate(b) for b in (4, 5, 11)] == pytest.approx([0.1, 0.05, 0.025])
    t = NetTraining.from_net(net_section("learning_rate=0.1\npolicy=exp\ngamma=0.9"))
    assert t.rate(3) == pytest.approx(0.1 * 0.9**3)
    t = NetTraining.from_net(net_section("learning_rate=0.1\npolicy=poly\npower=4\nmax_batches=100"))
    assert t.rate(50) == pytest.approx(0.1 * 0.5**4) and t.rate(100) == 0
    t = NetTraining.from_net(net_section("learning_rate=0.1\npolicy=sigmoid\ngamma=0.5\nstep=10"))
    assert t.rate(10) == pytest.approx(0.05) and t.rate(14) == pytest.approx(0.1 / (1 + math.exp(2)))
    t = NetTraining.from_net(net_section("learning_rate=0.1\npolicy=random\npower=1"))
    assert 0 <= t.rate(7) <= 0.1 and t.rate(7) == t.rate(7)  # seeded by the batch number: resumes repeat it
    t = NetTraining.from_net(net_section("batch=64\nsubdivisions=16\nmomentum=0.8\ndecay=0.001"))
    assert (t.batch, t.subdivisions, t.images_per_update, t.policy, t.momentum, t.decay) == (4, 16, 64, "constant", 0.8, 0.001)


@pytest.mark.parametrize(
    "text, message",
    [
        ("policy=steps\nsteps=10,20\nscales=.1", r"steps= has 2 values but scales= has 1"),
        ("policy=steps\nsteps=10", r"needs both steps= and scales="),
        ("policy=cosine", r"unknown policy=cosine .*silently use constant"),
        ("batch=4\nsubdivisions=8", r"batch=4 with subdivisions=8 .*multiple of subdivisions"),
    ],
)
def test_bad_net_options_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(CnnlabError, match=message) as e:
        NetTraining.from_net(net_section(text))
    assert "\n" not in str(e.value) and re.match(r"<cfg>:\d+: ", str(e.value))


def test_labels_match_folder_names_exactly_and_file_names_as_darknet() -> None:
    labels = [f"class_{i}" for i in range(12)]
    assert label_of("data/train/class_10/img_1.png", labels) == 10  # darknet's strstr would say class_1
    assert label_of("data/class_1/x/class_10_copy.png", labels) == 1  # a folder beats the file name
    names = ["cat", "bobcat", "airplane", "automobile"]
    assert label_of("cifar/train/12_airplane.png", names) == 2  # darknet's cifar layout: label in the name
    assert label_of("x/bobcat_3.png", names) == 1  # 'cat' is inside 'bobcat': the longer wins
    assert label_of("x/airplane_automobile.png", names) == -1  # two unrelated labels: unknown
    assert label_of("x/dog.png", names) == -1


def test_backup_names_follow_each_flavor() -> None:
    b = Path("bk")
    pj = plan_backups("pjreddie", b, "tiny", start=0, end=2000, images_per_update=64, n_images=6400)
    assert pj.final == b / "tiny.weights"
    assert pj.saves[100] == [b / "tiny_1.weights"] and pj.saves[1000] == [b / "tiny_10.weights", b / "tiny.backup"]
    ab = plan_backups("alexeyab", b, "tiny", start=50, end=1200, images_per_update=64, n_images=6400)
    assert ab.final == b / "tiny_final.weights"
    assert ab.saves[150] == [b / "tiny_last.weights"] and ab.saves[1050] == [b / "tiny_1050.weights", b / "tiny_last.weights"]
    assert basecfg("cfg/darknet19_448.cfg") == "darknet19_448" and basecfg("x/yolo.v2.cfg") == "yolo"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Three colour classes in class folders, a .data file and a backup folder; returns the .data."""
    rng = np.random.default_rng(0)
    paths = []
    for name, rgb in COLOURS.items():
        (tmp_path / "img" / name).mkdir(parents=True)
        for k in range(8):
            px = np.clip(np.array(rgb) + rng.normal(0, 25, (20 + k, 24, 3)), 0, 255).astype(np.uint8)
            p = tmp_path / "img" / name / f"{k}.png"
            Image.fromarray(px).save(p)
            paths.append(str(p))
    (tmp_path / "train.list").write_text("\n".join(paths) + "\n")
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    (tmp_path / "backup").mkdir()
    (tmp_path / "net.cfg").write_text(CFG)
    data = tmp_path / "colours.data"
    data.write_text(f"classes=3\ntrain={tmp_path / 'train.list'}\nlabels={tmp_path / 'labels.txt'}\nbackup={tmp_path / 'backup'}\ntop=2\n")
    return data


def _train(data: Path, *args: str, **kw) -> tuple[Path, list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    final = train_classifier(str(data), str(data.parent / "net.cfg"), *args, out=out, err=err, **kw)
    return final, out.getvalue().splitlines(), err.getvalue()


def test_train_prints_darknets_lines_writes_loadable_backups_and_learns(dataset: Path) -> None:
    torch.manual_seed(0)
    final, lines, err = _train(dataset)
    assert lines[:4] == ["net", "1", "Learning Rate: 0.1, Momentum: 0.9, Decay: 0.0005", "24"]
    assert err.startswith("layer     filters    size")
    progress = [PROGRESS.fullmatch(l) for l in lines[4:] if not l.startswith("Loaded: ")]
    assert all(progress) and len(progress) == 24  # one line per update
    m = [p.groups() for p in progress]
    assert [int(g[0]) for g in m] == list(range(1, 25)) and [int(g[5]) for g in m] == [24 * b for b in range(1, 25)]
    assert [float(g[4]) for g in m][8:11] == [0.1, 0.05, 0.05] and float(m[-1][4]) == pytest.approx(0.005)
    assert m[0][1] == "1.000" and m[-1][1] == "24.000"  # epochs = seen / images in the list
    losses = [float(g[2]) for g in m]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses  # three colours are easy
    # pjreddie: <base>_<epoch>.weights at every new epoch, <base>.weights at the end
    backup = dataset.parent / "backup"
    assert final == backup / "net.weights"
    assert sorted(p.name for p in backup.iterdir()) == sorted(["net.weights"] + [f"net_{e}.weights" for e in range(1, 25)])
    data = final.read_bytes()
    assert struct.unpack_from("<iiiQ", data) == (0, 2, 0, 24 * 24)  # darknet's header, seen = images trained on
    net = load_darknet(dataset.parent / "net.cfg", final)
    assert net.header.seen == 576
    # the trained net classifies its own training images through darknet's valid
    from cnnlab.darknet.programs import classifier_valid

    dataset.write_text(dataset.read_text() + f"valid={dataset.parent / 'train.list'}\n")
    out = io.StringIO()
    classifier_valid(data=str(dataset), cfg=str(dataset.parent / "net.cfg"), weights=str(final), out=out, err=io.StringIO())
    top1 = float(out.getvalue().splitlines()[-1].split("top 1: ")[1].split(",")[0])
    assert top1 > 0.8


def test_refuses_to_overwrite_and_resumes_from_a_backup(dataset: Path) -> None:
    _train(dataset, max_batches=6)
    with pytest.raises(CnnlabError, match=r"net.weights exists \(and 6 more of the files this run writes\); pass --force"):
        _train(dataset, max_batches=6)
    # resume from the epoch-3 backup: the counter, the schedule and the image count continue
    backup = dataset.parent / "backup"
    _, lines, _ = _train(dataset, str(backup / "net_3.weights"), max_batches=12, force=True)
    m = [PROGRESS.fullmatch(l).groups() for l in lines if PROGRESS.fullmatch(l)]
    assert [int(g[0]) for g in m] == list(range(4, 13)) and int(m[0][5]) == 4 * 24
    assert [float(g[4]) for g in m][-3:] == [0.05, 0.05, 0.05]
    assert load_darknet(dataset.parent / "net.cfg", backup / "net.weights").header.seen == 12 * 24


def test_alexeyab_backups_progress_line_and_topk(dataset: Path) -> None:
    dataset.write_text(dataset.read_text() + f"valid={dataset.parent / 'train.list'}\n")
    final, lines, _ = _train(dataset, flavor="alexeyab", max_batches=3, topk=True)
    assert final.name == "net_final.weights" and final.is_file()
    assert all(l.endswith(" hours left") for l in lines if PROGRESS.match(l))
    # -topk: accuracy on valid= with the .data top= (2 here) after the last update
    assert lines[-3:-1] == [" TOP calculation...", ""]
    m = re.fullmatch(r" accuracy top2 = (\d\.\d{6}) ", lines[-1])
    assert m and 0 <= float(m.group(1)) <= 1
    assert struct.unpack_from("<iii", final.read_bytes()) == (0, 2, 5)


def test_train_errors_name_the_problem(dataset: Path, tmp_path: Path, capsys) -> None:
    text = dataset.read_text()
    dataset.write_text(text.replace("classes=3", "classes=4"))
    with pytest.raises(CnnlabError, match=r"classes=4 but .* outputs 3"):
        _train(dataset)
    dataset.write_text(text.replace(f"backup={tmp_path / 'backup'}", f"backup={tmp_path / 'nowhere'}"))
    with pytest.raises(CnnlabError, match=r"backup directory .*nowhere.* does not exist"):
        _train(dataset)
    dataset.write_text(text)
    (tmp_path / "net.cfg").write_text(CFG.replace("max_batches=24\n", ""))
    with pytest.raises(CnnlabError, match=r"max_batches=0 would train forever"):
        _train(dataset)
    # through the command line: one line on stderr, exit 2
    code = main(["darknet", "classifier", "train", str(dataset), str(tmp_path / "net.cfg")])
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    code = main(["darknet", "classifier", "train", str(dataset), str(tmp_path / "net.cfg"), "--max-batches", "2"])
    assert code == 0 and (tmp_path / "backup" / "net.weights").is_file()


def test_unreadable_images_are_skipped_counted_and_reported(dataset: Path) -> None:
    listing = dataset.parent / "train.list"
    broken = dataset.parent / "img" / "red" / "broken.png"
    broken.write_bytes(b"not a png")
    listing.write_text(listing.read_text() + f"{broken}\n")
    _, lines, err = _train(dataset, max_batches=3)
    assert lines[3] == "25" and f"skipped 1 unreadable image(s): {broken}" in err
    assert err.count("warning: skipping") == 1  # reported once, then avoided
    for k in range(2):
        extra = dataset.parent / "img" / "red" / f"broken{k}.png"
        extra.write_bytes(b"")
        listing.write_text(listing.read_text() + f"{extra}\n")
    with pytest.raises(CnnlabError, match=r"cannot be read \(limit 1 %\)"):
        _train(dataset, max_batches=3, force=True)


def test_clear_and_a_partial_backbone_start_a_new_run(dataset: Path) -> None:
    from cnnlab.darknet.programs import partial

    trained, _, _ = _train(dataset, max_batches=4)
    backbone = dataset.parent / "backbone.weights"
    partial(cfg=str(dataset.parent / "net.cfg"), weights=str(trained), outfile=str(backbone), n=1, err=io.StringIO())
    for p in (dataset.parent / "backup").iterdir():
        p.unlink()
    with pytest.raises(CnnlabError, match="--allow-partial"):  # a prefix is refused unless asked for
        _train(dataset, str(backbone), max_batches=2)
    _, lines, err = _train(dataset, str(backbone), max_batches=2, allow_partial=True, clear=True)
    assert [int(PROGRESS.fullmatch(l).group(1)) for l in lines if PROGRESS.fullmatch(l)] == [1, 2]
    # -clear on a full backup: the counter restarts (darknet's fine-tuning recipe)
    _, lines, _ = _train(dataset, str(trained), max_batches=2, clear=True, force=True)
    assert [int(PROGRESS.fullmatch(l).group(1)) for l in lines if PROGRESS.fullmatch(l)] == [1, 2]


def test_darknet_augmentation_options_train_and_still_learn(dataset: Path) -> None:
    cfg = dataset.parent / "net.cfg"
    options = "angle=10\naspect=1.2\nhue=.1\nsaturation=1.5\nexposure=1.5\nmixup=1\n"
    cfg.write_text(CFG.replace("max_crop=20\n", "max_crop=20\n" + options))
    torch.manual_seed(0)
    final, lines, err = _train(dataset)
    losses = [float(PROGRESS.fullmatch(l).group(3)) for l in lines if PROGRESS.fullmatch(l)]
    assert len(losses) == 24 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses
    assert "warning: [net] mixup= is not implemented" in err  # AlexeyAB's classifier mixup: said, not silently dropped
    # the same seed repeats the run exactly (the augmentation is a function of the sample index)
    weights = final.read_bytes()
    torch.manual_seed(0)
    _, lines, _ = _train(dataset, force=True)
    assert [float(PROGRESS.fullmatch(l).group(3)) for l in lines if PROGRESS.fullmatch(l)] == losses
    assert final.read_bytes() == weights


def test_lists_that_are_not_utf8_train_as_in_darknet(dataset: Path) -> None:
    """A Latin-1 label and folder name (``rouge``→``roüge``) in labels= and train=: darknet reads bytes."""
    root = dataset.parent
    old, new = root / "img" / "red", root / "img" / "ro\udcfcge"  # the Latin-1 byte 0xfc as Python names it
    old.rename(new)
    listing = (root / "train.list").read_text().replace(str(old), str(new))
    (root / "train.list").write_bytes(listing.encode("utf-8", "surrogateescape"))
    (root / "labels.txt").write_bytes("ro\xfcge\ngreen\nblue\n".encode("latin-1"))
    final, lines, err = _train(dataset, max_batches=2)
    assert final.is_file() and lines[3] == "24" and "skipped" not in err
