"""Inference speed of darknet cfgs in cnnlab vs. the real darknet's own CPU build.

Claim: cnnlab runs darknet.cfg and yolov3-tiny.cfg several times faster than darknet's CPU build.
Evidence: images/s at batch 1 and 16, fp32 and bf16, next to the "Predicted in" time darknet printed
in the reference's cli.stdout/cli.stderr (pjreddie build, -Ofast, no OpenMP: one thread), as a ratio.

    PYTHONPATH=. python bench/darknet.py [--threads 1] [--seconds 3] [--ref ../shared/darknet]

Weights do not change the speed, so the nets run with their initial values (no download, no files).
cnnlab runs in eval mode (BN folded into the convs) with channels_last tensors, which oneDNN's CPU
convolutions prefer (about 1.5-2x over NCHW here).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import torch

from cnnlab.darknet import load_darknet

NETS = ("darknet", "yolov3-tiny")
BATCHES = (1, 16)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def darknet_seconds_per_image(ref: Path, net: str) -> float | None:
    """Median of the "Predicted in X seconds." times darknet printed for this net (batch 1)."""
    times = []
    for f in sorted((ref / "expected" / "pjreddie" / net).glob("*.cli.std*")):
        for m in re.finditer(r"Predicted in ([0-9.]+) seconds", f.read_text()):
            times.append(float(m.group(1)))
    return statistics.median(times) if times else None


def images_per_second(model: torch.nn.Module, batch: int, dtype: torch.dtype, seconds: float) -> float:
    x = torch.rand(batch, model.channels, model.height, model.width).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x)  # warm-up (allocations, kernel selection)
        n, t0 = 0, time.perf_counter()
        while True:
            model(x)
            n += batch
            dt = time.perf_counter() - t0
            if dt >= seconds and n >= 2 * batch:
                return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "darknet")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (darknet's reference build is single-threaded)")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timing window per measurement")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); darknet = pjreddie CPU build, batch 1, from {args.ref}")
    print(f"{'net':12s} {'dtype':5s} {'batch':>5s} {'images/s':>10s} {'darknet img/s':>14s} {'speed-up':>9s}")
    for net in NETS:
        cfg = args.ref / "cfg" / f"{net}.cfg"
        ref_s = darknet_seconds_per_image(args.ref, net)
        base = 1.0 / ref_s if ref_s else None
        print(f"# {net}: darknet reported {ref_s:.6f} s/image (median 'Predicted in' of its reference runs)" if ref_s else f"# {net}: no darknet timing found")
        for name, dtype in DTYPES.items():
            model = load_darknet(cfg).to(dtype=dtype, memory_format=torch.channels_last)
            for batch in BATCHES:
                ips = images_per_second(model, batch, dtype, args.seconds)
                ratio = f"{ips / base:8.1f}x" if base else "      n/a"
                shown = f"{base:14.2f}" if base else f"{'n/a':>14s}"
                print(f"{net:12s} {name:5s} {batch:5d} {ips:10.2f} {shown} {ratio}", flush=True)


if __name__ == "__main__":
    main()
