"""Class imbalance: does ``--balance sampler`` rescue a class cut to 5 % of its training images?

Claim (issue 12, acceptance 6): on mnist5k with one class cut to 5 % of its training images,
``--balance sampler`` raises that class's held-out recall by at least 10 points over the same run
without it (same seed, same recipe). Evidence: mnist5k exported as PNG class folders, the class's
training images cut to the first 5 % (sorted by file name), then the bundled ``lenet5_mnist5k``
recipe trained twice — natural sampling and ``--balance sampler`` — in this one process; the held-out
recall of every cut class, both runs, side by side.

    PYTHONPATH=. python bench/imbalance.py [--classes 8] [--keep 0.05] [--epochs 20] [--seed 0] [--alpha 1 0.5]

Figures (2026-12-03, commit a0cb753, torch 2.14.1, 2 shared CPU cores, OMP_NUM_THREADS=1; seed 0,
100 held-out images per class, so one image is one point): 20 of 400 training images kept, held-out
recall of the cut class, natural sampling → ``--balance sampler``, at the default 20 epochs and at
``--epochs 10``:

| class | 20 epochs | gain | 10 epochs | gain |
| --- | --- | --- | --- | --- |
| 0 | 95 % → 95 % | +0 | 91 % → 94 % | +3 |
| 1 | 90 % → 94 % | +4 | 87 % → 94 % | +7 |
| 2 | 70 % → 92 % | +22 | 64 % → 92 % | +28 |
| 3 | 90 % → 97 % | +7 | 75 % → 97 % | +22 |
| 4 | 73 % → 80 % | +7 | 39 % → 84 % | +45 |
| 5 | 83 % → 88 % | +5 | 41 % → 81 % | +40 |
| 6 | 88 % → 94 % | +6 | 33 % → 98 % | +65 |
| 7 | 80 % → 90 % | +10 | 74 % → 91 % | +17 |
| 8 | 68 % → 81 % | +13 | 11 % → 75 % | +64 |
| 9 | 85 % → 91 % | +6 | 1 % → 86 % | +85 |

The 10-point target holds for 3 of the 10 classes at 20 epochs (2, 7, 8) and for 8 at 10 epochs
(all but 0 and 1). At 20 epochs the natural run has learned the 20 images anyway; at 10 it has not,
and the sampler gets the class learned early. Digits 0 and 1 are recognised from 20 images at
87-92 % without it (seeds 0-2 at 10 epochs: 0: +3, +4, +3; 1: +7, +5, +2) against 99 % / 97 % on the
uncut data (measured earlier), so +10 is out of their reach. (The table this replaces, measured
earlier the same day on an older commit, gave 5 of 10 at 20 epochs; the single-seed figures move
that much with the code: digit 8 natural 74 % then, 68 % now. See bench/RESULTS.md.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from cnnlab import config
from cnnlab.data.datasets import open_split
from cnnlab.data.export import export_class_folders
from cnnlab.engine.train import train


def export_cut(root: Path, cut: str, keep: float) -> tuple[int, int]:
    """mnist5k as ``root/{train,val}/<class>/*.png`` with class ``cut``'s training images cut to the
    first ``keep`` fraction (by file name); returns (kept, before)."""
    for split in ("train", "val"):
        export_class_folders(open_split("mnist5k", split), root, split)
    files = sorted((root / "train" / cut).iterdir())
    kept = max(1, round(keep * len(files)))
    for f in files[kept:]:
        f.unlink()
    return kept, len(files)


def recall_of(data: Path, out: Path, balance: str, epochs: int, seed: int, cut: str, alpha: float = 1.0) -> float:
    """Train the lenet5_mnist5k recipe on ``data``; the held-out recall (percent) of class ``cut``."""
    overrides = {"data": str(data), "out": str(out), "balance": balance, "epochs": epochs, "seed": seed, "progress": False,
                 "balance_alpha": alpha}  # fmt: skip
    train(config.resolve(config.load_recipe("lenet5_mnist5k"), overrides))
    report = json.loads((out / "valid.json").read_text())
    return 100.0 * report["recall"][report["classes"].index(cut)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", nargs="+", default=["8"], help="classes to cut, one experiment each (default: 8)")
    p.add_argument("--keep", type=float, default=0.05, help="fraction of the class's training images kept")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, nargs="+", default=[1.0], help="--balance-alpha values, one balanced run each (default: 1)")
    args = p.parse_args()
    rows = []
    for cut in args.classes:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "mnist5k-cut"
            kept, before = export_cut(data, cut, args.keep)
            natural = recall_of(data, Path(tmp) / "natural", "none", args.epochs, args.seed, cut)
            balanced = [recall_of(data, Path(tmp) / f"balanced-{a}", "sampler", args.epochs, args.seed, cut, a) for a in args.alpha]
        cells = " | ".join(f"{b:.1f} % ({b - natural:+.1f})" for b in balanced)
        rows.append(f"| {cut} | {kept} of {before} | {natural:.1f} % | {cells} |")
        print(f"\nclass {cut} cut: {rows[-1]}", flush=True)  # each class as it finishes: a run takes minutes
    print(f"\nlenet5_mnist5k recipe, {args.epochs} epochs, seed {args.seed}: held-out recall of the cut class (gain in points)")
    print("| class | training images kept | natural sampling | " + " | ".join(f"--balance sampler, alpha {a:g}" for a in args.alpha) + " |")
    print("| --- " * (3 + len(args.alpha)) + "|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
