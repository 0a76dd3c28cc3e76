"""What DDP costs on one machine: the same training from shards as 1 process × 2 threads and as
2 processes × 1 thread (torchrun, gloo), images/s of each and their ratio.

Claim (issue 12): on 2 CPU cores, 2 processes of one thread train at least 0.9× as fast as one process
of two threads (same global batch), so DDP costs little. Evidence: ResNet-18 at 64×64 px trained
from WebDataset shards by ``cnnlab train`` (workers=0: the shard loader decodes in the training
process), alternating rounds of the two set-ups in this one invocation; the figure of each round is
``summary.json``'s training images/s (start-up and evaluation excluded), and the medians are compared.

    PYTHONPATH=. python bench/ddp.py [--images 1024] [--rounds 3] [--epochs 2] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from loader import build_corpus  # noqa: E402  (the ImageNet-like JPEG corpus of the loader bench)


def _env(threads: int) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))


def _train_args(shards: Path, out: Path, batch: int, epochs: int) -> list[str]:
    return ["train", "--model", "resnet18", "--data", f"shards:{shards}", "--epochs", str(epochs), "--batch-size", str(batch),
            "--workers", "0", "--no-progress", "--val-limit", "64", "--lr", "0.1", "--warmup-epochs", "0",
            "--preprocess", "{input_size: [3, 64, 64], resize: 73}", "--rrc-scale", "0.25", "1", "--out", str(out)]  # fmt: skip


def one_process(shards: Path, out: Path, batch: int, epochs: int) -> float:
    code = "import sys, torch; torch.set_num_threads(2); from cnnlab.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, *_train_args(shards, out, batch, epochs)], env=_env(2), check=True, capture_output=True)
    return json.loads((out / "summary.json").read_text())["images_per_second"]


def two_processes(shards: Path, out: Path, batch: int, epochs: int) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cnnlab",
           *_train_args(shards, out, batch // 2, epochs)]  # fmt: skip
    subprocess.run(cmd, env=_env(1), check=True, capture_output=True)
    return json.loads((out / "summary.json").read_text())["images_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128, help="global batch (each of the 2 processes takes half), as bench/train_step.py")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_corpus(root / "corpus", args.images)
        shards = root / "shards"
        subprocess.run([sys.executable, "-m", "cnnlab", "data", "shards", str(root / "corpus"), "--out", str(shards), "--shard-size", "64", "--resize", "80"],
                       env=_env(2), check=True, capture_output=True)  # fmt: skip
        print(f"ResNet-18 at 64x64 from shards of {args.images} JPEGs, global batch {args.batch}, {args.epochs} epochs per round")
        ones, twos = [], []
        for r in range(args.rounds):
            ones.append(one_process(shards, root / f"one{r}", args.batch, args.epochs))
            twos.append(two_processes(shards, root / f"two{r}", args.batch, args.epochs))
            print(f"  round {r + 1}: 1 process x 2 threads {ones[-1]:6.1f} img/s   2 processes x 1 thread {twos[-1]:6.1f} img/s")
    one, two = statistics.median(ones), statistics.median(twos)
    print(f"1 process  x 2 threads : {one:6.1f} img/s (median)")
    print(f"2 processes x 1 thread : {two:6.1f} img/s (median; torchrun, gloo)")
    print(f"ratio                  : {two / one:.2f}x  (target >= 0.9x)")


if __name__ == "__main__":
    main()
