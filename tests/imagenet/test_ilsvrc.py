from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from cnnlab.cli import main
from cnnlab.data.imagenet import ilsvrc
from cnnlab.data.imagenet.devkit import read_devkit
from cnnlab.data.imagenet.ilsvrc import Options, prepare_ilsvrc
from ilsvrc_fixtures import COLORS, SORTED, Ilsvrc

OPTS = Options(progress=False, workers=2)


def tree(root: Path) -> dict[str, str]:
    """Every visible output file (not .cnnlab state) → sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cnnlab" not in p.parts
    }


def mean_color(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(0)


def nearest_class(path: Path) -> str:
    m = mean_color(path)
    return min(COLORS, key=lambda w: float(np.abs(np.array(COLORS[w]) - m).sum()))


def test_devkit_maps_ids_not_sorted_order(ilsvrc_fixture: Ilsvrc) -> None:
    dk = read_devkit(ilsvrc_fixture.devkit)
    assert [s.wnid for s in dk.synsets] == ["n02119789", "n01751748", "n01440764", "n01443537"]
    assert "n00015388" not in dk.wnids  # internal synsets (num_children > 0) are not classes
    assert dk.val_ids == ilsvrc_fixture.val_ids
    # val 1 has ID 2 = n01751748 (sea snake), which is index 2 in sorted order, not index 1.
    assert dk.val_wnid("ILSVRC2012_val_00000001.JPEG") == "n01751748"
    assert dk.wnids.index("n01751748") == 2
    assert dk.val_wnid("ILSVRC2012_val_00000099.JPEG") is None


def test_every_image_lands_in_its_class_with_traps_handled(ilsvrc_fixture: Ilsvrc, tmp_path: Path) -> None:
    fx = ilsvrc_fixture
    out = tmp_path / "out"
    result = prepare_ilsvrc(out, fx.devkit, fx.train, fx.val, opts=OPTS)

    for key, kind in fx.expected_train.items():
        path = out / "train" / key
        if kind == "corrupt":
            assert not path.exists()
            assert f"train/{key}" in result["failures"]["corrupt"]
            continue
        with Image.open(path) as im:
            assert im.format == "JPEG"
            assert im.mode == ("L" if kind == "grayscale" else "RGB"), key
        if kind != "grayscale":  # gray has no hue to check; its mode is checked above
            assert nearest_class(path) == key.split("/")[0], key
    for name, wnid in fx.expected_val.items():
        path = out / "val" / wnid / name
        assert path.exists(), name
        assert nearest_class(path) == wnid
    assert sum(1 for _ in (out / "val").rglob("*.JPEG")) == len(fx.expected_val)

    n_ok_train = sum(1 for k in fx.expected_train.values() if k == "ok")
    assert result["counts"] == {
        "ok": n_ok_train + len(fx.expected_val),
        "converted_cmyk": 1,
        "converted_png": 1,
        "grayscale": 1,
        "corrupt": 1,
        "unsafe_member": 4,  # ../../ and /tmp/ and a symlink in train, ../ in val
    }
    # Nothing escaped the output folder.
    assert not list(tmp_path.rglob("*escape*")) and not list(tmp_path.parent.glob("*escape*"))
    assert not Path("/tmp/n01443537_abs.JPEG").exists()
    assert (out / "labels.txt").read_text().split() == SORTED
    rows = [line.split("\t") for line in (out / "synsets.tsv").read_text().splitlines()]
    assert rows[0] == ["index", "wnid", "lemma", "definition"]
    assert [(int(r[0]), r[1]) for r in rows[1:]] == list(enumerate(SORTED))
    assert rows[1][2].startswith("tench")  # timm's lemma for n01440764
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(result))

    # The class-folder reader sees exactly the labels.txt order, and no state folders.
    train = ImageFolder(str(out / "train"))
    val = ImageFolder(str(out / "val"))
    assert train.classes == SORTED and val.classes == SORTED
    first = [s for s in val.samples if s[0].endswith("ILSVRC2012_val_00000001.JPEG")]
    assert first[0][1] == 2


def test_grayscale_rgb_option(ilsvrc_fixture: Ilsvrc, tmp_path: Path) -> None:
    fx = ilsvrc_fixture
    result = prepare_ilsvrc(tmp_path, fx.devkit, fx.train, None, opts=Options(grayscale="rgb", progress=False))
    with Image.open(tmp_path / "train/n01440764/n01440764_gray.JPEG") as im:
        assert im.mode == "RGB"
    assert result["counts"]["converted_grayscale"] == 1 and "grayscale" not in result["counts"]


def test_resume_after_interrupt_equals_clean_run(ilsvrc_fixture: Ilsvrc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fx = ilsvrc_fixture
    clean = tmp_path / "clean"
    prepare_ilsvrc(clean, fx.devkit, fx.train, fx.val, opts=OPTS)

    real = ilsvrc._process_class
    calls: list[str] = []

    def dying(wnid: str, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(wnid)
        if len(calls) == 3:
            # The class is written to its partial folder, then the process "dies" before the rename.
            real(wnid, *a, **k)
            raise KeyboardInterrupt
        return real(wnid, *a, **k)

    monkeypatch.setattr(ilsvrc, "_process_class", dying)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        prepare_ilsvrc(resumed, fx.devkit, fx.train, fx.val, opts=OPTS)
    assert not (resumed / "train" / calls[2]).exists()  # the unfinished class is not visible
    calls.clear()
    prepare_ilsvrc(resumed, fx.devkit, fx.train, fx.val, opts=OPTS)
    assert calls == SORTED[2:]  # finished classes were not redone
    assert tree(resumed) == tree(clean)


def test_cli_ilsvrc_and_user_errors(ilsvrc_fixture: Ilsvrc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = ilsvrc_fixture
    code = main(["data", "ilsvrc", "--val", str(fx.val), "--devkit", str(fx.devkit), "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 0
    assert "kept 8 images" in capsys.readouterr().out
    code = main(["data", "ilsvrc", "--val", str(fx.val), "--devkit", str(tmp_path / "nope.tar.gz"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--devkit" in err and len(err.splitlines()) == 1
    bad = tmp_path / "bad_devkit.tar.gz"
    bad.write_bytes(b"not a tar")
    code = main(["data", "ilsvrc", "--val", str(fx.val), "--devkit", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2 and "devkit" in capsys.readouterr().err
