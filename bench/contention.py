"""cnnlab beside a CPU-bound process: training and predict images/s, alone and beside, per thread setting.

Claim (issue 15, acceptance 5): beside another CPU-bound process, cnnlab's default thread setting
(cnnlab.threads: every core, OpenMP threads sleeping between parallel regions) is within 80 % of the
best fixed setting and keeps at least 40 % of its own figure measured alone.
Evidence: in one run, for each setting, images/s alone and beside a ``yes > /dev/null``-like
process, in paired rounds (alone then beside, the settings' order rotating every round) so that
the load of whatever else runs on the machine hits every setting alike; medians over the rounds.

    PYTHONPATH=. python bench/contention.py [--rounds 3] [--epochs 1] [--train-images 1920] [--predict-images 20]

Settings (each run in a fresh process: the OpenMP environment is read once, when torch loads):
  default       `cnnlab train` as a user runs it, nothing set
  --threads 1   cnnlab's flag (one thread; the wait policy does not matter)
  --threads 2   cnnlab's flag (two threads, cnnlab's wait policy)
  2 spin        OMP_NUM_THREADS=2 GOMP_SPINCOUNT=300000: libgomp's own waiting, cnnlab's default before
Training: `cnnlab train --config lenet5_mnist5k --epochs E --train-limit N` (the demo recipe; 1,920
images are 30 steps of 64), images/s as the run's summary.json reports it (training steps only). Predict: ResNet-18
at 224x224, one image per forward, fp32 eval under inference_mode, in the same process afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETTINGS: dict[str, tuple[list[str], dict[str, str]]] = {  # name -> (extra cnnlab flags, extra environment)
    "default": ([], {}),
    "--threads 1": (["--threads", "1"], {}),
    "--threads 2": (["--threads", "2"], {}),
    "2 spin": ([], {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": "300000"}),
}
FIXED = ["--threads 1", "--threads 2", "2 spin"]
USER_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME")


def child(out: str, epochs: int, train_images: int, predict_images: int, flags: list[str]) -> None:
    """One measurement, in this fresh process: train through cnnlab's own entry point (which sets the
    threads before torch loads), then time predict in the same process."""
    from cnnlab.cli import main

    argv = ["train", "--config", "lenet5_mnist5k", "--epochs", str(epochs), "--train-limit", str(train_images),
            "--val-limit", "200", "--out", out, "--no-progress", *flags]  # fmt: skip
    with open(os.devnull, "w") as null:
        saved, sys.stdout = sys.stdout, null
        try:
            code = main(argv)
        finally:
            sys.stdout = saved
    if code:
        raise SystemExit(f"cnnlab train failed ({code})")
    summary = json.loads((Path(out) / "summary.json").read_text())
    print(json.dumps({"train": summary["images_per_second"], "predict": predict_speed(predict_images), **threads_in_use()}))


def predict_speed(n: int) -> float:
    import time

    import torch

    from cnnlab import create_model

    model = create_model("resnet18", num_classes=1000).eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(3):  # oneDNN picks its kernels on first use
            model(x)
        t = time.perf_counter()
        for _ in range(n):
            model(x)
    return n / (time.perf_counter() - t)


def threads_in_use() -> dict:
    import torch

    from cnnlab import threads

    d = threads.current()
    return {"threads": torch.get_num_threads(), "wait": d.wait_policy if d else "?"}


def measure(name: str, beside: bool, args: argparse.Namespace, tmp: Path, n: int) -> dict:
    flags, extra = SETTINGS[name]
    env = {k: v for k, v in os.environ.items() if k not in USER_VARS} | extra | {"PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--child", str(tmp / f"run{n}"), "--epochs", str(args.epochs),
           "--train-images", str(args.train_images), "--predict-images", str(args.predict_images), "--", *flags]  # fmt: skip
    rival = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if beside else None
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()
    if proc.returncode:
        raise SystemExit(f"{name}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def run_rounds(args: argparse.Namespace) -> dict[tuple[str, bool], list[dict]]:
    names = list(SETTINGS)
    results: dict[tuple[str, bool], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="contention-") as tmp:
        n = 0
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]  # rotate: no setting always runs first
            for name in order:
                for beside in (False, True):
                    n += 1
                    res = measure(name, beside, args, Path(tmp), n)
                    results.setdefault((name, beside), []).append(res)
                    print(f"  round {r + 1} {name:12s} {'beside' if beside else 'alone ':6s} train {res['train']:7.0f}  "
                          f"predict {res['predict']:6.1f}  ({res['threads']} threads, wait {res['wait']}; load {load()})", flush=True)  # fmt: skip
    return results


def report(results: dict[tuple[str, bool], list[dict]]) -> None:
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("train", "predict")} for k, v in results.items()}
    print(f"\nmedians, images/s   {'train alone':>12s} {'train beside':>13s} {'kept':>5s}   {'predict alone':>13s} {'predict beside':>14s} {'kept':>5s}")
    for name in SETTINGS:
        a, b = med[(name, False)], med[(name, True)]
        print(f"{name:19s} {a['train']:12.0f} {b['train']:13.0f} {b['train'] / a['train']:5.0%}   "
              f"{a['predict']:13.1f} {b['predict']:14.1f} {b['predict'] / a['predict']:5.0%}")  # fmt: skip
    for m in ("train", "predict"):
        best = max(FIXED, key=lambda s: med[(s, True)][m])
        vs_best = med[("default", True)][m] / med[(best, True)][m]
        kept = med[("default", True)][m] / med[("default", False)][m]
        print(f"{m}: beside the other process, default / best fixed ({best}) = {vs_best:.2f} (target >= 0.80, "
              f"{'met' if vs_best >= 0.8 else 'NOT met'}); default beside / alone = {kept:.2f} (target >= 0.40, "
              f"{'met' if kept >= 0.4 else 'NOT met'})")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1, help="training epochs per measurement")
    p.add_argument("--train-images", type=int, default=1920, help="training images per epoch (the recipe's batch is 64: 30 steps)")
    p.add_argument("--predict-images", type=int, default=20, help="ResNet-18 images timed per measurement")
    p.add_argument("--child", metavar="OUT", help=argparse.SUPPRESS)
    p.add_argument("flags", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.epochs, args.train_images, args.predict_images, args.flags)
    import torch  # only for the header: this process measures nothing itself

    print(f"cnnlab contention bench: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"rival: `yes > /dev/null`; {args.rounds} rounds; load at start {load()}")  # fmt: skip
    report(run_rounds(args))


if __name__ == "__main__":
    main()
