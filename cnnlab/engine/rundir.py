"""The run directory: where a training run keeps everything it produces.

    config.yaml        resolved config + cnnlab version + git revision
    metrics.jsonl      one JSON line per epoch
    summary.json       final figures (top1, top5, loss, epochs, train_seconds, images_per_second …)
    valid.json         the final evaluation report (per-class scores, confusion matrix)
    checkpoints/       last.pt (every epoch, and every ckpt_every steps), best.pt
    tb/                TensorBoard events
    curves.png, confusion_matrix.png
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.fileio import write_json_atomic


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def new_run_dir(out: str, model: str, data: str) -> Path:
    """``out`` if given (it must not hold a run already), else ``runs/<model>-<data>[-N]``."""
    if out:
        p = Path(out)
        if p.exists() and not p.is_dir():
            raise CnnlabError(f"--out {p} is a file, not a folder: choose another --out (the file is left as it is)")
        if p.exists() and any(p.iterdir()):
            raise CnnlabError(f"run directory {p} already exists; continue it with --resume {p}, or choose another --out")
        _mkdir(p, exist_ok=True)
        return p
    # "darknet:cfg/yolo.cfg" → "darknet-yolo": a model given as a file must not put its path in the name
    family, _, path = model.partition(":")
    name = f"{family}-{Path(path).stem}" if path else model
    stem = f"{name}-{Path(data).name or 'data'}"
    base = Path("runs")
    for n in range(1, 10_000):
        p = base / (stem if n == 1 else f"{stem}-{n}")
        if not p.exists():
            _mkdir(p, exist_ok=False)
            return p
    raise CnnlabError("too many runs in ./runs; pass --out")


def _mkdir(p: Path, exist_ok: bool) -> None:
    """``mkdir -p`` whose failures (a file on the path, no permission, disk full) are one line."""
    try:
        p.mkdir(parents=True, exist_ok=exist_ok)
    except OSError as e:
        raise CnnlabError(f"cannot create run directory {p}: {e.strerror or e}; choose another --out") from None


def append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def keep_jsonl(path: Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite a JSON-lines file with only the records ``keep`` accepts (atomically)."""
    records = read_jsonl(path)
    kept = [r for r in records if keep(r)]
    if len(kept) != len(records):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


write_json = write_json_atomic  # summary.json, valid.json: never half written


def plot_curves(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in records], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in records], label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [r["train_top1"] for r in records], label="train top-1")
    ax_acc.plot(epochs, [r["val_top1"] for r in records], label="val top-1")
    ax_acc.plot(epochs, [r["val_top5"] for r in records], label="val top-5", linestyle="--")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, max_classes: int = 50) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(confusion, dtype=np.float64)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(min(12, 2 + 0.4 * min(n, max_classes)),) * 2)
    rows = m.sum(1, keepdims=True)
    ax.imshow(m / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    if n <= max_classes:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if m[i, j]:
                        ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7, color="white" if m[i, j] > rows[i, 0] / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
