"""Every cnnlab command that writes files, run over its own output: nothing changes without ``--force``.

``WRITERS`` maps each writing command to a small invocation on tiny generated inputs; ``WRITES_NOTHING``
lists the commands that only print. ``test_every_command_is_classified`` walks the CLI's own parser,
so a command added later fails here until it joins one of the two.

For each writer: run it, snapshot the bytes of its output tree, run it again without ``--force``: the
second run ends in a clean resume (exit 0) or one error line, and the snapshot is unchanged. With
``--force`` the command does replace (a file the test edits is rewritten).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cnnlab.cli import build_parser, main

sys.path.insert(0, str(Path(__file__).parent / "imagenet"))  # the ImageNet fixtures' builders
from httpserver import LocalServer, fixed
from ilsvrc_fixtures import build_ilsvrc

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}

# LeNet-5 on 64 of scikit-learn's 8x8 digits, one epoch: a checkpoint in about a second.
TRAIN = ["--model", "lenet5", "--data", "digits", "--epochs", "1", "--batch-size", "16", "--train-limit", "64",
         "--val-limit", "32", "--workers", "0", "--no-progress"]  # fmt: skip

CLASSIFIER_CFG = """[net]
batch=8
subdivisions=1
width=16
height=16
channels=3
learning_rate=0.1
momentum=0.9
decay=0.0005
max_batches=2

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
"""

DETECTOR_CFG = """[net]
batch=1
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[yolo]
mask=0,1,2
anchors=4,4, 8,8, 16,16
classes=3
num=3
"""

BBOX_XML = """<annotation><filename>n01440764_1</filename><size><width>40</width><height>32</height></size>
<object><name>n01440764</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>30</xmax><ymax>20</ymax></bndbox></object>
</annotation>"""


@dataclass
class Inputs:
    """Tiny inputs every writer reads; built once per module."""

    root: Path
    folders: Path  # train/<colour>/*.png and val/<colour>/*.png
    run: Path  # a finished cnnlab run
    cfg: Path  # a darknet classifier cfg ...
    weights: Path  # ... and weights for it
    data: Path  # its .data (backup= inside root/backup-*)
    det_cfg: Path
    det_weights: Path
    det_data: Path
    image: Path
    ilsvrc: object
    xml_dir: Path
    server: LocalServer


def _png_folders(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for name, rgb in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for k in range(n):
                px = np.clip(np.array(rgb) + rng.normal(0, 20, (18, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(root / split / name / f"{k}.png")


def _darknet_weights(cfg: Path, out: Path) -> None:
    from cnnlab.darknet.model import load_darknet

    torch.manual_seed(0)
    load_darknet(cfg).save_weights(out)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("writers-in")
    folders = root / "png"
    _png_folders(folders)
    run = root / "run"
    assert main(["train", *TRAIN, "--out", str(run)]) == 0
    cfg, weights = root / "net.cfg", root / "net.weights"
    cfg.write_text(CLASSIFIER_CFG)
    _darknet_weights(cfg, weights)
    images = sorted(str(p) for p in (folders / "train").rglob("*.png"))
    (root / "train.list").write_text("\n".join(images) + "\n")
    (root / "labels.txt").write_text("".join(f"{c}\n" for c in COLOURS))
    data = root / "colours.data"
    data.write_text(f"classes=3\ntrain={root / 'train.list'}\nvalid={root / 'train.list'}\nlabels={root / 'labels.txt'}\n"
                    f"backup={root / 'backup'}\ntop=2\n")  # fmt: skip
    det_cfg, det_weights = root / "det.cfg", root / "det.weights"
    det_cfg.write_text(DETECTOR_CFG)
    _darknet_weights(det_cfg, det_weights)
    det_data = root / "det.data"
    det_data.write_text(f"classes=3\nnames={root / 'labels.txt'}\n")
    xml_dir = root / "xml"
    xml_dir.mkdir()
    (xml_dir / "n01440764_1.xml").write_text(BBOX_XML)
    buf = io.BytesIO()
    with Image.open(folders / "train" / "red" / "0.png") as im:
        im.save(buf, "JPEG")
    jpeg = buf.getvalue()
    server = LocalServer({f"/{i}.jpg": fixed(jpeg) for i in range(3)}, max_requests=400, lifetime=600)
    server.__enter__()
    try:
        yield Inputs(root, folders, run, cfg, weights, data, det_cfg, det_weights, det_data, folders / "val" / "red" / "0.png",
                     build_ilsvrc(root / "ilsvrc", per_class=1), xml_dir, server)  # fmt: skip
    finally:
        server.stop()


@dataclass
class Writer:
    """One writing command: ``argv(inputs, out)`` runs it with its outputs under ``out``."""

    argv: Callable[[Inputs, Path], list[str]]
    force: str | None = None  # the option that lets it replace, if it has one
    prepare: Callable[[Inputs, Path], None] | None = None  # put inputs that live in the output tree


def _copy_folders(inp: Inputs, out: Path) -> None:
    shutil.copytree(inp.folders, out / "set")


def _urls_list(inp: Inputs, out: Path) -> Path:
    lst = out.parent / f"{out.name}-urls.txt"
    lst.write_text("".join(f"n01440764_{i}\t{inp.server.base}/{i}.jpg\n" for i in range(3)))
    return lst


def _backup_data(inp: Inputs, out: Path) -> Path:
    """The .data with backup= pointing into ``out``."""
    (out / "backup").mkdir(parents=True, exist_ok=True)
    d = out.parent / f"{out.name}.data"
    d.write_text(inp.data.read_text().replace(f"backup={inp.root / 'backup'}", f"backup={out / 'backup'}"))
    return d


def _det_valid_data(inp: Inputs, out: Path) -> Path:
    """A detector .data whose valid= images are the PNG set and whose results= is under ``out``."""
    d = out.parent / f"{out.name}-det.data"
    d.write_text(inp.det_data.read_text() + f"valid={inp.root / 'train.list'}\nresults={out / 'results'}\n")
    return d


def _labelled_set(inp: Inputs, out: Path) -> None:
    """Two images with YOLO labels beside them (AlexeyAB's rule) and a .data listing them, for calc_anchors."""
    (out / "set").mkdir(parents=True)
    for i, (w, h) in enumerate([(0.2, 0.3), (0.5, 0.4)]):
        shutil.copy(inp.image, out / "set" / f"{i}.png")
        (out / "set" / f"{i}.txt").write_text(f"0 0.5 0.5 {w} {h}\n1 0.4 0.4 {h} {w}\n")
    (out / "set" / "train.txt").write_text("".join(f"{out / 'set' / f'{i}.png'}\n" for i in range(2)))
    (out / "set" / "boxes.data").write_text(f"classes=2\ntrain={out / 'set' / 'train.txt'}\n")


def _det_train_set(inp: Inputs, out: Path) -> None:
    """Three PNGs with YOLO labels beside them and a detection .data whose backup= is under ``out``."""
    (out / "set").mkdir(parents=True)
    (out / "backup").mkdir()
    for i, png in enumerate(sorted((inp.folders / "train").rglob("*.png"))[:3]):
        shutil.copy(png, out / "set" / f"{i}.png")
        (out / "set" / f"{i}.txt").write_text(f"{i} 0.5 0.5 0.4 0.3\n")
    (out / "set" / "train.txt").write_text("".join(f"{out / 'set' / f'{i}.png'}\n" for i in range(3)))
    (out / "set" / "det.data").write_text(
        f"classes=3\ntrain={out / 'set' / 'train.txt'}\nnames={inp.root / 'labels.txt'}\nbackup={out / 'backup'}\n"
    )


# Each writing command (as the CLI names it) → a small invocation whose outputs all land under ``out``.
WRITERS: dict[str, Writer] = {
    "train": Writer(lambda i, o: ["train", *TRAIN, "--out", o / "run"]),
    "valid": Writer(lambda i, o: ["valid", "-c", i.run, "--json", o / "valid.json", "--no-progress", "--workers", "0"], "--force"),
    "datasets": Writer(lambda i, o: ["datasets", "digits", "--export", o / "export", "--per-class", "2"]),
    "data urls": Writer(lambda i, o: ["data", "urls", _urls_list(i, o), "--out", o / "urls", "--workers", "1", "--no-progress"]),
    "data ilsvrc": Writer(lambda i, o: ["data", "ilsvrc", "--train", i.ilsvrc.train, "--val", i.ilsvrc.val, "--devkit",
                                        i.ilsvrc.devkit, "--out", o / "ilsvrc", "--workers", "1", "--no-progress"]),
    "data bbox": Writer(lambda i, o: ["data", "bbox", i.xml_dir, "--out", o / "boxes.csv"]),
    "data darknet": Writer(lambda i, o: ["data", "darknet", o / "set"], "--force", _copy_folders),
    "data shards": Writer(lambda i, o: ["data", "shards", i.folders, "--out", o / "shards", "--shard-size", "4", "--workers", "0",
                                        "--no-progress"]),
    "darknet partial": Writer(lambda i, o: ["darknet", "partial", i.cfg, i.weights, o / "part.weights", "1"], "--force"),
    "darknet convert": Writer(lambda i, o: ["darknet", "convert", i.cfg, i.weights, o / "net.pt", "--data", i.data], "--force"),
    "darknet detector test": Writer(lambda i, o: ["darknet", "detector", "test", i.det_data, i.det_cfg, i.det_weights, i.image,
                                                  "-out", o / "pred"], "--force"),
    "darknet detector valid": Writer(lambda i, o: ["darknet", "detector", "valid", _det_valid_data(i, o), i.det_cfg, i.det_weights],
                                     "--force"),
    "darknet detector calc_anchors": Writer(lambda i, o: ["darknet", "detector", "calc_anchors", o / "set" / "boxes.data", "-num_of_clusters",
                                                          "2", "-width", "64", "-height", "64", "--out-dir", o / "anchors"], "--force",
                                            _labelled_set),
    "darknet classifier train": Writer(lambda i, o: ["darknet", "classifier", "train", _backup_data(i, o), i.cfg], "--force"),
    "darknet detector train": Writer(lambda i, o: ["darknet", "detector", "train", o / "set" / "det.data", i.det_cfg, "--max-batches", "2"],
                                     "--force", _det_train_set),
    "export": Writer(lambda i, o: ["export", i.run, "--format", "onnx", "--out", o / "model.onnx", "--check-images", "2"], "--force"),
    "data shapes": Writer(lambda i, o: ["data", "shapes", o / "shapes", "--train", "2", "--valid", "1", "--size", "32"], "--force"),
}

# Commands that print and write no file.
WRITES_NOTHING = {"predict", "models", "summary", "darknet classifier predict", "darknet classifier valid", "darknet layers",
                  "darknet detector map"}


def _leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every runnable command the parser knows, as typed: ``train``, ``data shards``, ``darknet detector test``."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [prefix]
    return [c for name, p in subs[0].choices.items() for c in _leaf_commands(p, f"{prefix} {name}".strip())]


def test_every_command_is_classified() -> None:
    """A command added to the CLI fails here until it joins WRITERS (tested) or WRITES_NOTHING."""
    known = set(_leaf_commands(build_parser()))
    assert known - WRITERS.keys() - WRITES_NOTHING == set(), "new command: add it to WRITERS or WRITES_NOTHING"
    assert (WRITERS.keys() | WRITES_NOTHING) - known == set(), "stale entries in the tables"
    assert not WRITERS.keys() & WRITES_NOTHING


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(capsys: pytest.CaptureFixture[str], argv: list) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _one_line_or_clean(code: int, err: str) -> None:
    assert "Traceback" not in err
    if code != 0:
        # darknet's commands print their layer table first, as darknet does; the error is one line, the last
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[-1].startswith("cnnlab ") and ": error: " in lines[-1], err
        assert sum(": error: " in line for line in lines) == 1, err


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_rerun_over_existing_output_changes_nothing_without_force(name: str, inputs: Inputs, tmp_path: Path, capsys) -> None:
    w = WRITERS[name]
    out = tmp_path / "out"
    out.mkdir()
    if w.prepare:
        w.prepare(inputs, out)
    before_first = snapshot(out)
    code, err = run_cli(capsys, w.argv(inputs, out))
    assert code == 0, err
    first = snapshot(out)
    written = {k for k in first if first[k] != before_first.get(k)}
    assert written, f"{name} wrote nothing under {out}"
    code, err = run_cli(capsys, w.argv(inputs, out))
    _one_line_or_clean(code, err)
    assert snapshot(out) == first, f"{name} changed its own output on a second run without {w.force or 'force'}"
    if w.force is None:
        return
    # --force replaces: a file of the first run, edited by the user, is rewritten.
    victim = out / min(written)
    victim.write_bytes(b"edited by the user\n")
    code, err = run_cli(capsys, [*w.argv(inputs, out), w.force])
    assert code == 0, err
    assert victim.read_bytes() == first[str(victim.relative_to(out))] or victim.read_bytes() != b"edited by the user\n"


# --- SIGKILL at seeded points: nothing half-written ------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]

# Each command runs as its own process, forked from one "zygote" that imported torch, torchvision,
# torchmetrics and cnnlab once: a fresh interpreter per command cost 4-8 s of imports each. The zygote
# forks before it computes anything, so no torch thread pool exists yet. A request sets up the child:
# "slow": os.replace waits 30 ms first (the window in which a temp file exists is then wide enough
# for the "k-th temp file seen" kill points to land inside a write); "limit": a file-size limit with
# SIGXFSZ ignored (a write past it fails with EFBIG: a full disk); "ro": the folder bind-mounted
# read-only in a private mount namespace (root, whom permissions do not stop).
ZYGOTE = r"""
import ctypes, json, os, signal, subprocess, sys, time, traceback, resource
import torch, torchvision, torchmetrics  # noqa: F401  (the imports every child would repeat)
import cnnlab.cli, cnnlab.commands.train, cnnlab.commands.valid, cnnlab.data.datasets  # noqa: F401
# Ctrl-C as a user at a terminal gives it: a shell without job control starts background commands
# (the suite itself, run with `&` from a script) with SIGINT ignored, which Python then keeps.
signal.signal(signal.SIGINT, signal.default_int_handler)

def run(req):
    if req.get("slow"):
        _replace = os.replace
        def slow_replace(src, dst):
            time.sleep(0.03)
            return _replace(src, dst)
        os.replace = slow_replace
    if req.get("limit"):  # stderr goes through a pipe to a helper process: the limit would cut its file
        r, w = os.pipe()
        if os.fork() != 0:
            os.close(w)
            with open(req["err"], "wb") as f:
                while chunk := os.read(r, 65536):
                    f.write(chunk)
            _, status = os.wait()
            return os.waitstatus_to_exitcode(status)
        os.close(r)
        os.dup2(w, 2)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (req["limit"], req["limit"]))
    if req.get("ro"):
        libc = ctypes.CDLL(None, use_errno=True)
        d = req["ro"]
        ok = libc.unshare(0x00020000) == 0 and all(subprocess.run(c, capture_output=True).returncode == 0 for c in (
            ["mount", "--make-rprivate", "/"], ["mount", "--bind", d, d], ["mount", "-o", "remount,ro,bind", d, d]))
        if not ok:
            return 77
    if not req["argv"]:
        return 0
    return cnnlab.cli.main(req["argv"])

for line in sys.stdin:
    req = json.loads(line)
    if "wait" in req:
        _, status = os.waitpid(req["wait"], 0)
        code = os.waitstatus_to_exitcode(status)
        print(json.dumps({"code": code}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        sys.stdin.close()
        fd = os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
        try:
            code = run(req)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


class Zygote:
    def __init__(self, tmp: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.tmp = tmp
        self.n = 0

    def _ask(self, req: dict) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def start(self, argv: list, **setup) -> Child:
        self.n += 1
        err = self.tmp / f"stderr-{self.n}"
        pid = self._ask({"argv": [str(a) for a in argv], "err": str(err), **setup})["pid"]
        return Child(self, pid, err)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@dataclass
class Child:
    zygote: Zygote
    pid: int
    err_file: Path
    returncode: int | None = None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def running(self) -> bool:
        """Alive and not yet a zombie (a finished child stays in the table until the zygote reaps it)."""
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    def wait(self) -> tuple[int, str]:
        if self.returncode is None:
            self.returncode = self.zygote._ask({"wait": self.pid})["code"]
        return self.returncode, self.err_file.read_text()


# Representative writers → how many files each writes through a temp file (the temp kill points).
KILLED = {"train": 6, "data shards": 8, "data darknet": 5, "darknet partial": 1, "valid": 1}
# (writer, seed): two seeded points for the writers of many files, one for the others.
KILL_CASES = [("train", 0), ("train", 1), ("data shards", 0), ("data shards", 1), ("data darknet", 0), ("darknet partial", 1), ("valid", 0)]


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory):
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


def wait_for_temp(proc: Child, out: Path, k: int, timeout: float = 120) -> bool:
    """Until the k-th distinct hidden temp file has appeared under ``out`` (True) or the process ended."""
    seen: set[str] = set()
    end = time.monotonic() + timeout
    while proc.running() and time.monotonic() < end:
        if out.exists():
            seen.update(str(p) for p in out.rglob(".*.tmp"))
        if len(seen) >= k:
            return True
        time.sleep(0.002)
    return False


def kill_point(name: str, seed: int) -> tuple[str, float]:
    """A seeded point: the k-th temp file seen (inside a write), or a delay after the start."""
    rng = random.Random(f"{name}:{seed}")
    return ("temp", rng.randint(1, KILLED[name])) if rng.random() < 0.8 else ("delay", round(rng.uniform(0.5, 4.0), 2))


def _parses(p: Path) -> bool:
    """A whole file of its kind (a truncated one fails to load)."""
    try:
        if p.suffix == ".pt":
            torch.load(p, map_location="cpu", weights_only=True)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(line) for line in p.read_text().splitlines()]
        elif p.suffix == ".yaml":
            assert isinstance(yaml.safe_load(p.read_text()), dict)
        elif p.suffix == ".png":
            with Image.open(p) as im:
                im.load()
        elif p.suffix == ".tar":
            with tarfile.open(p) as tf:
                tf.getmembers()
        else:
            return False
    except Exception:  # noqa: BLE001  (each loader raises its own kinds for a cut file)
        return False
    return True


def assert_nothing_half_written(out: Path, ref: Path, what: str) -> None:
    """Every visible file under ``out`` equals the uninterrupted run's or loads whole; temp names are hidden."""
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue  # hidden: temp files a SIGKILL leaves, the run lock, resume journals
        if rel.parts[:2] == ("run", "tb"):
            continue  # TensorBoard's event log: the library's own append-only record file
        assert ".tmp" not in p.name, f"{what}: visible temporary file {rel}"
        r = ref / rel  # the uninterrupted run's file, with its folder's name where lists name paths
        same = r.is_file() and r.read_bytes().replace(str(ref).encode(), str(out).encode()) == p.read_bytes()
        assert same or _parses(p), f"{what}: {rel} is half written"


@pytest.mark.parametrize("name, seed", KILL_CASES)
def test_sigkill_at_seeded_points_leaves_nothing_half_written(name: str, seed: int, inputs: Inputs, zygote: Zygote, tmp_path: Path, capsys) -> None:
    w = WRITERS[name]
    ref, out = tmp_path / "ref", tmp_path / "out"
    for d in (ref, out):
        d.mkdir()
        if w.prepare:
            w.prepare(inputs, d)
    code, err = run_cli(capsys, w.argv(inputs, ref))
    assert code == 0, err
    kind, at = point = kill_point(name, seed)
    proc = zygote.start(w.argv(inputs, out), slow=True)
    try:
        if kind == "temp":
            assert wait_for_temp(proc, out, int(at)), f"{name} ended before its temp file {at} appeared"
        else:
            time.sleep(at)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.wait()
    assert "Traceback" not in err, err
    assert_nothing_half_written(out, ref, f"{name} killed at {point}")


# --- A write that fails part-way (disk full), Ctrl-C during a write, a read-only output folder ------------------


@dataclass
class FaultCase:
    """``argv(inputs, out)`` writes into ``out``, where ``user`` (name → bytes) already lies; ``limit``: the
    file-size limit that makes its first big write fail part-way."""

    argv: Callable[[Inputs, Path], list]
    user: dict[str, bytes]
    limit: int


FAULT_CASES = {
    "train": FaultCase(lambda i, o: ["train", *TRAIN, "--out", o / "run"], {"notes.json": b'{"keep": 1}\n'}, 20_000),
    "data shards": FaultCase(lambda i, o: ["data", "shards", i.folders, "--out", o / "shards", "--shard-size", "4", "--workers", "0",
                                           "--no-progress"], {"notes.json": b'{"keep": 1}\n'}, 1_500),
    "valid": FaultCase(lambda i, o: ["valid", "-c", i.run, "--json", o / "valid.json", "--force", "--no-progress", "--workers", "0"],
                       {"valid.json": b'{"mine": 1}\n'}, 100),
    "darknet partial": FaultCase(lambda i, o: ["darknet", "partial", i.cfg, i.weights, o / "part.weights", "1", "--force"],
                                 {"part.weights": b"the user's weights"}, 100),
    "export": FaultCase(lambda i, o: ["export", i.run, "--format", "onnx", "--out", o / "model.onnx", "--check-images", "2", "--force"],
                        {"model.onnx": b"the user's model"}, 1_000),
}


def _read_only(folder: Path, zygote: Zygote) -> dict:
    """The child's setup that makes ``folder`` read-only: a read-only bind mount in a private mount
    namespace for root (whom permissions do not stop), mode 0555 for anyone else."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return {}
    if zygote.start([], ro=str(folder)).wait()[0] != 0:
        pytest.skip("running as root without mount namespaces: no way to make a folder read-only")
    return {"ro": str(folder)}


def _one_error_line(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"cnnlab {command.split()[0]}: "), err
    assert sum(line.startswith("cnnlab ") for line in lines) == 1, err
    return lines[-1]


@pytest.mark.parametrize("fault", ["disk full", "ctrl-c", "read-only"])
@pytest.mark.parametrize("name", sorted(FAULT_CASES))
def test_a_failed_write_is_one_line_and_loses_nothing(name: str, fault: str, inputs: Inputs, zygote: Zygote, tmp_path: Path) -> None:
    case = FAULT_CASES[name]
    out = tmp_path / "out"
    out.mkdir()
    for file, data in case.user.items():
        (out / file).write_bytes(data)
    argv = case.argv(inputs, out)
    if fault == "disk full":
        proc = zygote.start(argv, limit=case.limit)
    elif fault == "read-only":
        proc = zygote.start(argv, **_read_only(out, zygote))
    else:
        proc = zygote.start(argv, slow=True)
        try:
            assert wait_for_temp(proc, out, 1), f"{name} ended before writing"
        finally:
            proc.send_signal(signal.SIGINT)
    code, err = proc.wait()
    out.chmod(0o755)
    line = _one_error_line(err, name)
    print(f"{name}, {fault}: exit {code}: {line}")
    assert code != 0, err
    # A read-only folder is either hit by the write (the OS's words) or refused before any work starts.
    read_only = ("Read-only file system", "Permission denied", "cannot write in")
    expect = {"disk full": "File too large", "ctrl-c": "interrupted", "read-only": read_only}[fault]
    assert any(e in line for e in ([expect] if isinstance(expect, str) else expect)), line
    for file, data in case.user.items():
        assert (out / file).read_bytes() == data, f"{name}, {fault}: the user's {file} was changed"
    assert not [p for p in out.rglob("*.tmp") if not p.name.startswith(".")], "visible temporary file"
    assert not list(out.rglob(".*.tmp")), f"{name}, {fault}: temp file left behind: {list(out.rglob('.*.tmp'))}"
    for p in out.rglob("*"):
        rel = p.relative_to(out)
        if p.is_file() and p.name not in case.user and not any(x.startswith(".") or x == "tb" for x in rel.parts):
            assert _parses(p), f"{name}, {fault}: {rel} is half written"
