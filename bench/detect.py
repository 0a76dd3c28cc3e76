"""Detection training speed and accuracy on the CPU: the tiny YOLO of ``cnnlab/recipes/yolov3-tiny-shapes.cfg``.

Claims (issue 14, acceptance 7 and the bench half of 1):
  1. cnnlab's default CPU train step for the ``detect`` task (the engine's ``Trainer``/``train_one_epoch``
     with :class:`cnnlab.tasks.detection.Detection`: bf16 autocast, channels_last, uint8 batches
     normalised on the device) trains the recipe's tiny YOLO at least 1.8x as fast as a plain fp32
     eager loop of the same network (float NCHW batches; zero_grad / forward / ``detection_loss`` /
     backward / step). Evidence: images/s of both on the same batch of real ``cnnlab data shapes``
     images and boxes, from the same initial weights, in alternating rounds in this one process
     (machine load hits both alike); medians and their ratio.
  2. ``--darknet-src DIR``: AlexeyAB's darknet, built from a source folder the user fetched (in a
     temporary folder outside the repository; never committed), times ``darknet detector train`` on
     the same cfg (a temporary copy with a small ``max_batches``) and the same images, beside
     ``cnnlab darknet detector train`` on the same cfg, data and ``max_batches``: images/s of each from
     the wall time of the updates after the first few, and their ratio.
  3. ``--train-to-map``: the bench-sized run of acceptance 1: a generated shapes set (400 train / 100
     valid images, 160 px) trains the recipe with ``cnnlab darknet detector train -map`` until the
     held-out mAP@0.5 reaches 0.8 (or ``max_batches``); the mAP trajectory and the wall time are
     printed. With ``--darknet-src`` too, real darknet trains the same cfg on the same data for the
     same updates, and both ``detector map`` programs (darknet's and cnnlab's) score both weights.
     ``detector train`` rather than ``cnnlab train --task detect``: it trains with the cfg's own
     [net] schedule (learning_rate, burn_in, steps), so darknet's run beside it trains the very same
     recipe, and its ``-map`` cadence and ``_best.weights`` are AlexeyAB's.

    PYTHONPATH=. python bench/detect.py [--steps 6] [--rounds 3] [--batch 32] [--threads 1]
    PYTHONPATH=. python bench/detect.py --darknet-src /tmp/dk-bench [--darknet-batches 30]
    PYTHONPATH=. python bench/detect.py --train-to-map [--darknet-src /tmp/dk-bench]

(``git -C /work/.mirror/AlexeyAB+darknet/repo archive HEAD | tar -x -C /tmp/dk-bench`` makes such a
source folder from a clone.) The shapes set is generated into a temporary folder each run.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.darknet.detector_task import darknet_net
from cnnlab.darknet.yolo_loss import detection_loss
from cnnlab.data.loader import BadImageLog, Batch
from cnnlab.data.shapes import ShapesSpec, make_shapes
from cnnlab.data.sources.yolo_labels import open_yolo
from cnnlab.engine.build import prepare_for_training
from cnnlab.engine.device import amp_dtype, pick_device
from cnnlab.engine.loop import Trainer, train_one_epoch
from cnnlab.engine.optim import build_optimizer, build_scheduler
from cnnlab.engine.state import TrainState
from cnnlab.models import create_model
from cnnlab.tasks.detection import Detection

RECIPE = Path(__file__).resolve().parent.parent / "cnnlab" / "recipes" / "yolov3-tiny-shapes.cfg"


@dataclass
class Setup:
    batch: int
    steps: int  # timed optimizer steps per round
    warmup: int  # untimed steps before each round (oneDNN picks kernels on first use)


def load_batch(data_dir: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training images of a shapes set (already at the net's 160 px) and their boxes,
    as a uint8 (n, 3, H, W) batch and a (n, M, 5) box tensor padded with cls = -1."""
    source = open_yolo(data_dir / "train.txt", (data_dir / "shapes.names").read_text().split())
    images = torch.stack([source.load(i) for i in range(n)])
    if images.dtype != torch.uint8:
        images = (images * 255).round().clamp(0, 255).to(torch.uint8)
    boxes = [source.boxes(i) for i in range(n)]
    m = max(len(b) for b in boxes)
    out = torch.full((n, m, 5), -1.0)
    for k, b in enumerate(boxes):
        out[k, : len(b)] = torch.from_numpy(np.asarray(b, dtype=np.float32))
    return images, out


def plain_fp32_loop(model: nn.Module, images: torch.Tensor, boxes: torch.Tensor, s: Setup) -> float:
    """The loop most users write: float NCHW batches, fp32, eager, darknet's loss. Returns images/s."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    model.train()
    net = darknet_net(model)
    heads = [net.layers[i] for i in net.detection_layers]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = detection_loss(heads, model(images), boxes, images.shape[-1], images.shape[-2])
        (loss / images.shape[0]).backward()
        opt.step()

    for _ in range(s.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(s.steps):
        step()
    return s.steps * s.batch / (time.perf_counter() - t0)


def cnnlab_default_step(model: nn.Module, images_u8: torch.Tensor, boxes: torch.Tensor, classes: list[str], s: Setup) -> float:
    """cnnlab's engine with its default config on this device and the ``detect`` task."""
    cfg = TrainConfig()
    device = pick_device(cfg.device)
    amp = amp_dtype(cfg.amp, device)
    normalize = prepare_for_training(model, model.meta.preprocess, cfg, device, amp)
    optimizer = build_optimizer(model, cfg.opt, 1e-4, cfg.momentum, cfg.nesterov, 5e-4, cfg.no_decay_bn_bias)
    scheduler = build_scheduler(optimizer, s.warmup + s.steps, 1, sched="constant")
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    batch = Batch(images_u8, torch.full((s.batch,), -1), torch.arange(s.batch), [], s.batch, boxes)
    task = Detection(classes, device)
    trainer = Trainer(model, task, normalize, optimizer, scheduler, scaler, None, device, amp, cfg.accum_steps, cfg.clip_grad, cfg.seed)

    def run(n: int) -> None:
        train_one_epoch(trainer, [batch] * n, TrainState(), BadImageLog(1.0))

    run(s.warmup)
    t0 = time.perf_counter()
    run(s.steps)
    return s.steps * s.batch / (time.perf_counter() - t0)


def step_speed(data_dir: Path, args: argparse.Namespace) -> None:
    s = Setup(args.batch, args.steps, args.warmup)
    classes = (data_dir / "shapes.names").read_text().split()
    images_u8, boxes = load_batch(data_dir, s.batch)
    images_f32 = images_u8.float() / 255  # darknet's input: pixels scaled to [0, 1]
    torch.manual_seed(0)
    base = create_model(f"darknet:{args.cfg}", num_classes=len(classes), flavor="alexeyab")
    print(f"{args.cfg.name}, {images_u8.shape[-1]}x{images_u8.shape[-2]}, batch {s.batch} "
          f"({int((boxes[..., 0] >= 0).sum())} boxes), {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{args.rounds} alternating rounds of {s.steps} timed steps (+{s.warmup} warm-up) each; load average {load()}")
    plain, ours = [], []
    for r in range(args.rounds):
        plain.append(plain_fp32_loop(copy.deepcopy(base), images_f32, boxes, s))
        ours.append(cnnlab_default_step(copy.deepcopy(base), images_u8, boxes, classes, s))
        print(f"  round {r + 1}: plain fp32 eager {plain[-1]:7.1f} img/s   cnnlab default {ours[-1]:7.1f} img/s")
    p, o = statistics.median(plain), statistics.median(ours)
    print(f"plain fp32 eager loop : {p:7.1f} img/s (median)")
    print(f"cnnlab default step   : {o:7.1f} img/s (median; detect task, bf16 autocast + channels_last)")
    print(f"ratio                 : {o / p:.2f}x  (target >= 1.8x); load average {load()}")


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def build_darknet(src: Path) -> Path:
    """AlexeyAB's darknet built from ``src`` in a folder of the system's temp dir (not the repository);
    the build is reused when its binary exists. Returns the binary."""
    if not (src / "Makefile").is_file() or not (src / "src" / "yolo_layer.c").is_file():
        sys.exit(f"bench/detect.py: error: {src} is not a darknet source folder (no Makefile and src/yolo_layer.c)")
    key = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:10]
    build = Path(tempfile.gettempdir()) / f"cnnlab-bench-darknet-{key}"
    binary = build / "darknet"
    if binary.is_file():
        return binary
    build.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", f"{src}/.", str(build)], check=True)
    print(f"building darknet in {build} (make -j2 GPU=0 CUDNN=0 OPENCV=0 OPENMP=1 AVX=1) ...", flush=True)
    done = subprocess.run(["make", "-j2", "GPU=0", "CUDNN=0", "OPENCV=0", "OPENMP=1", "AVX=1"], cwd=build, capture_output=True, text=True, check=False)
    if done.returncode or not binary.is_file():
        sys.exit(f"bench/detect.py: error: building darknet in {build} failed:\n{done.stderr[-2000:]}")
    return binary


PROGRESS = re.compile(r"^\s*(\d+): [-+\w.]+, [-+\w.]+ avg")  # "N: loss, avg loss, rate, s seconds, n images"


def cfg_copy(cfg: Path, out: Path, max_batches: int) -> Path:
    """A copy of ``cfg`` whose [net] trains ``max_batches`` updates (steps= beyond it are harmless)."""
    text = re.sub(r"(?m)^max_batches\s*=.*$", f"max_batches={max_batches}", cfg.read_text())
    out.write_text(text)
    return out


def timed_run(cmd: list[str], cwd: Path, threads: int, log: Path) -> list[tuple[int, float]]:
    """Run a trainer, time-stamping each progress line as it arrives: ``[(update, seconds since start)]``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    stamps: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    with open(log, "w") as out, subprocess.Popen(["stdbuf", "-oL", "-eL", *cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                                  stderr=out, text=True) as p:
        assert p.stdout is not None
        for line in p.stdout:
            out.write(line)
            m = PROGRESS.match(line)
            if m:
                stamps.append((int(m.group(1)), time.perf_counter() - t0))
    if p.returncode:
        sys.exit(f"bench/detect.py: error: {' '.join(cmd)} exited with {p.returncode}; see {log}")
    return stamps


def images_per_s(stamps: list[tuple[int, float]], batch: int, skip: int) -> float:
    """Images/s over the updates after the first ``skip`` (start-up, first-use kernel choice)."""
    (b0, t0), (b1, t1) = next(s for s in stamps if s[0] >= skip), stamps[-1]
    return (b1 - b0) * batch / (t1 - t0)


def versus_darknet(data_dir: Path, args: argparse.Namespace, work: Path) -> None:
    binary = build_darknet(args.darknet_src)
    batches = args.darknet_batches
    cfg = cfg_copy(args.cfg, work / "bench-tiny.cfg", batches)
    batch = int(re.search(r"(?m)^batch\s*=\s*(\d+)", cfg.read_text()).group(1))  # images per update
    data = data_dir / "shapes.data"
    cnnlab = [sys.executable, "-m", "cnnlab", "darknet", "detector", "train", str(data), str(cfg), "-dont_show", "--force", "--flavor", "alexeyab"]
    darknet = [str(binary), "detector", "train", str(data), str(cfg), "-dont_show"]
    print(f"\ndetector train, {cfg.name} ({args.cfg.name} with max_batches={batches}), {batch} images per update, "
          f"OMP_NUM_THREADS={args.threads}; images/s over updates {args.skip}..{batches}")
    dk, ours = [], []
    for r in range(args.rounds):
        dk.append(images_per_s(timed_run(darknet, work, args.threads, work / f"darknet-{r}.log"), batch, args.skip))
        ours.append(images_per_s(timed_run(cnnlab, Path.cwd(), args.threads, work / f"cnnlab-{r}.log"), batch, args.skip))
        print(f"  round {r + 1}: darknet (AlexeyAB) {dk[-1]:6.1f} img/s   cnnlab detector train {ours[-1]:6.1f} img/s   (load {load()})")
    d, o = statistics.median(dk), statistics.median(ours)
    print(f"darknet detector train: {d:6.1f} img/s (median)")
    print(f"cnnlab detector train : {o:6.1f} img/s (median)")
    print(f"ratio cnnlab/darknet  : {o / d:.2f}x")


MAP_LINE = re.compile(r"mean.average.precision \(mAP@([\d.]+)\) = ([\d.]+)")  # detector map's and -map's
TRAIN_MAP = re.compile(r"mean_average_precision \(mAP@([\d.]+)\) = ([\d.]+)")  # -map's summary line only


@dataclass
class MapRun:
    trajectory: list[tuple[int, float, float]]  # (update, mAP, seconds since start)
    updates: int  # updates trained when the run stopped
    seconds: float


def train_until(cmd: list[str], threads: int, log: Path, target: float) -> MapRun:
    """Run ``detector train -map``, recording each mAP; stop it once the mAP reaches ``target``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    trajectory: list[tuple[int, float, float]] = []
    update, reached = 0, False
    t0 = time.perf_counter()
    with open(log, "w") as out, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=out, text=True) as p:
        assert p.stdout is not None
        for line in p.stdout:
            out.write(line)
            if m := PROGRESS.match(line):
                if reached:  # the next update has begun: the mAP's _best.weights is on disk
                    p.terminate()
                    break
                update = int(m.group(1))
            elif m := TRAIN_MAP.search(line):
                trajectory.append((update, float(m.group(2)), time.perf_counter() - t0))
                print(f"  update {update:5d}: mAP@0.5 {trajectory[-1][1]:.4f}  ({trajectory[-1][2]:6.1f} s)", flush=True)
                reached = trajectory[-1][1] >= target
        p.wait()
    return MapRun(trajectory, update, time.perf_counter() - t0)


def map_of(cmd: list[str], threads: int) -> str:
    """The mAP line of a ``detector map`` run (darknet's or cnnlab's)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    found = MAP_LINE.findall(done.stdout + done.stderr)
    if done.returncode or not found:
        sys.exit(f"bench/detect.py: error: {' '.join(cmd)} printed no mAP (exit {done.returncode}):\n{(done.stdout + done.stderr)[-1500:]}")
    return found[-1][1]


def train_to_map(work: Path, args: argparse.Namespace) -> None:
    data_dir = make_set(work / "map", args.train_images, args.valid_images, 160)
    data = data_dir / "shapes.data"
    backup = data_dir / "backup"
    text = args.cfg.read_text()
    max_batches = args.max_batches or int(re.search(r"(?m)^max_batches\s*=\s*(\d+)", text).group(1))
    cfg = cfg_copy(args.cfg, work / "shapes-tiny.cfg", max_batches)
    print(f"\ntrain to mAP: {args.cfg.name} on {args.train_images} generated images (held out: {args.valid_images}), "
          f"until mAP@0.5 >= {args.target} or {max_batches} updates; OMP_NUM_THREADS={args.map_threads}; load {load()}")
    cmd = [sys.executable, "-m", "cnnlab", "darknet", "detector", "train", str(data), str(cfg), "-map", "-dont_show", "--force", "--flavor", "alexeyab"]
    run = train_until(cmd, args.map_threads, work / "cnnlab-map.log", args.target)
    best = max(m for _, m, _ in run.trajectory) if run.trajectory else float("nan")
    reached = next(((u, s) for u, m, s in run.trajectory if m >= args.target), None)
    verdict = f"reached {args.target} at update {reached[0]} after {reached[1]:.0f} s" if reached else f"did not reach {args.target}"
    print(f"cnnlab detector train -map: {verdict}; best mAP@0.5 {best:.4f}; {run.updates} updates in {run.seconds:.0f} s; load {load()}")
    if not args.darknet_src:
        return
    ours = backup / f"{cfg.stem}_best.weights"
    if not ours.is_file():
        sys.exit(f"bench/detect.py: error: cnnlab's run wrote no {ours.name}; see its log {work / 'cnnlab-map.log'}")
    binary = build_darknet(args.darknet_src)
    dk_dir = work / "darknet-run"
    dk_dir.mkdir()
    (dk_dir / "backup").mkdir()
    dk_data = dk_dir / "shapes.data"
    dk_data.write_text(data.read_text().replace(f"backup={backup}/", f"backup={dk_dir / 'backup'}/"))
    dk_cfg = cfg_copy(args.cfg, dk_dir / "shapes-tiny.cfg", run.updates)
    t0 = time.perf_counter()
    timed_run([str(binary), "detector", "train", str(dk_data), str(dk_cfg), "-dont_show"], dk_dir, args.map_threads, dk_dir / "train.log")
    print(f"darknet detector train: {run.updates} updates in {time.perf_counter() - t0:.0f} s; load {load()}")
    theirs = dk_dir / "backup" / f"{dk_cfg.stem}_final.weights"
    rows = [("cnnlab-trained", ours), ("darknet-trained", theirs)]
    print(f"{'weights':18s} {'darknet detector map':>22s} {'cnnlab detector map':>22s}")
    for name, w in rows:
        dk_map = map_of([str(binary), "detector", "map", str(data), str(cfg), str(w), "-dont_show"], args.map_threads)
        cn_map = map_of([sys.executable, "-m", "cnnlab", "darknet", "detector", "map", str(data), str(cfg), str(w)], args.map_threads)
        print(f"{name:18s} {dk_map:>22s} {cn_map:>22s}")


def make_set(root: Path, train: int, valid: int, size: int) -> Path:
    data = make_shapes(root / "shapes", ShapesSpec(train=train, valid=valid, size=size))
    (root / "shapes" / "backup").mkdir(exist_ok=True)
    return data.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", type=Path, default=RECIPE)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    # one thread by default: a per-core figure is stable on a shared machine (see bench/train_step.py)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--darknet-src", type=Path, help="AlexeyAB darknet source folder: also time its detector train")
    ap.add_argument("--darknet-batches", type=int, default=30, help="updates of each detector train run (default 30)")
    ap.add_argument("--skip", type=int, default=5, help="updates left out of the detector train timing (default 5)")
    ap.add_argument("--train-to-map", action="store_true", help="train the recipe on a generated set to the target mAP")
    ap.add_argument("--target", type=float, default=0.8, help="held-out mAP@0.5 to reach (default 0.8)")
    ap.add_argument("--max-batches", type=int, default=0, help="most updates of --train-to-map (default: the cfg's)")
    ap.add_argument("--train-images", type=int, default=400)
    ap.add_argument("--valid-images", type=int, default=100)
    ap.add_argument("--map-threads", type=int, default=os.cpu_count() or 1, help="threads of the --train-to-map runs")
    ap.add_argument("--skip-speed", action="store_true", help="leave out the train-step comparison")
    ap.add_argument("--keep", type=Path, help="work in this new folder and keep it (data, logs, weights) instead of a temp one")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-detect-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            sys.exit(f"bench/detect.py: error: --keep {work} is not empty; give a new folder")
        if not args.skip_speed:
            data_dir = make_set(work, max(args.batch, 64), 16, 160)
            step_speed(data_dir, args)
            if args.darknet_src:
                versus_darknet(data_dir, args, work)
        if args.train_to_map:
            train_to_map(work, args)


if __name__ == "__main__":
    main()
