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
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_writer, write_json_atomic, write_text_atomic


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_out(out: str) -> None:
    """``--out`` for a new run: not a file, not a folder that holds something (checked before the data
    and model are built, so the mistake shows at once)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise CnnlabError(f"--out {p} is a file, not a folder: choose another --out (the file is left as it is)")
    if p.exists() and any(p.iterdir()):
        if not (p / "config.yaml").is_file():
            raise CnnlabError(f"--out {p} is a folder that holds other files (not a cnnlab run); choose another --out (it is left as it is)")
        raise CnnlabError(f"run directory {p} already exists; continue it with --resume {p}, or choose another --out")


_STARTING: list[tuple[Path, bool]] = []  # (run folder, made by this process) of a run not started yet
_START_FILES = {"config.yaml", ".lock"}  # what a run writes before it begins


def discard_unstarted() -> None:
    """Undo the folders of runs that failed before they began (a flag out of range, weights that do
    not fit, no data): left behind, each would block the same ``--out`` next time and pile up in
    ``runs/``. A folder this process made goes; an empty one the user made is emptied again. Only a
    folder holding nothing but what the start wrote is touched."""
    while _STARTING:
        p, made = _STARTING.pop()
        if not p.is_dir() or not {c.name for c in p.iterdir()} <= _START_FILES:
            continue
        if made:
            shutil.rmtree(p, ignore_errors=True)
        else:
            for name in _START_FILES:
                (p / name).unlink(missing_ok=True)


def mark_started() -> None:
    """The run began: its folder is the user's now, whatever happens next."""
    _STARTING.clear()


def new_run_dir(out: str, model: str, data: str) -> Path:
    """``out`` if given (it must not hold a run already), else ``runs/<model>-<data>[-N]``."""
    if out:
        check_out(out)
        p = Path(out)
        _STARTING.append((p, not p.exists()))  # an empty folder the user made stays theirs
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
            _STARTING.append((p, True))
            return p
    raise CnnlabError("too many runs in ./runs; pass --out")


@dataclass(frozen=True)
class RunDir:
    path: Path
    resuming: bool  # checkpoints/last.pt exists and the run continues from it

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.pt"


def open_run(cfg, resume: str | None, dist) -> RunDir:
    """The run's folder, decided by rank 0 and shared with every rank: ``--resume RUN`` continues RUN
    (or starts it over if it stopped before its first checkpoint); under a torchrun restart the same
    command continues its ``--out`` folder; otherwise a new folder with the resolved config."""
    from cnnlab.engine import distributed

    decision: tuple[str, bool] | str = ""
    if dist.is_main:
        try:
            run = _open_on_main(cfg, resume, dist.world)
            decision = (str(run.path), run.resuming)
        except CnnlabError as e:
            decision = str(e)
    decision = distributed.gather_objects(decision)[0]
    if isinstance(decision, str):  # every rank stops with rank 0's message
        raise CnnlabError(decision)
    return RunDir(Path(decision[0]), decision[1])


_LOCKS: dict[Path, int] = {}  # run directory → open lock file descriptor (held until the process ends)


def lock_run(path: Path) -> None:
    """Hold ``RUN/.lock`` for this process's lifetime: a second process on the same run directory
    (two terminals, a script run twice) stops with one line instead of both writing ``last.pt``."""
    import fcntl

    path = path.resolve()
    if path in _LOCKS:
        return
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise CnnlabError(f"{path} is in use by another cnnlab process (pid {holder}); wait for it to finish, or choose another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS[path] = fd


def release_runs() -> None:
    """Let go of every run directory this process holds (closing a descriptor releases its flock)."""
    while _LOCKS:
        os.close(_LOCKS.popitem()[1])


def _open_on_main(cfg, resume: str | None, world: int) -> RunDir:
    run = _choose_run(cfg, resume, world)
    lock_run(run.path)
    return run


def _choose_run(cfg, resume: str | None, world: int) -> RunDir:
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    target = Path(resume) if resume else Path(cfg.out) if (restarted and cfg.out) else None
    if target is not None:
        if target.is_dir():
            lock_run(target)  # before anything in it is read or rewritten
        if (target / "checkpoints" / "last.pt").is_file():
            return RunDir(target, True)
        if (target / "config.yaml").is_file():  # stopped before its first checkpoint: nothing to keep
            (target / "metrics.jsonl").unlink(missing_ok=True)
            save_config(cfg, target, world)
            return RunDir(target, False)
        if resume:
            raise CnnlabError(f"nothing to resume in {target}: no checkpoints/last.pt (start a new run without --resume)")
    path = new_run_dir(cfg.out, cfg.model, cfg.data)
    save_config(cfg, path, world)
    return RunDir(path, False)


def save_config(cfg, path: Path, world: int) -> None:
    from cnnlab import __version__, config as config_mod

    extra = {"cnnlab_version": __version__, "git_revision": git_revision(), "world_size": world}  # global_batch: a config key
    extra["threads"] = threads_record()
    config_mod.save(cfg, path / "config.yaml", extra)


def threads_record() -> dict:
    """This process's threads (rank 0's; every rank's count is the same unless the user set otherwise)."""
    import torch

    from cnnlab import threads

    decided = threads.current()
    record = decided.record() if decided else {"source": "not set by cnnlab (library use)"}
    return record | {"threads": torch.get_num_threads()}  # what torch runs with, whatever set it


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
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


write_json = write_json_atomic  # summary.json, valid.json: never half written


def plot_curves(records: list[dict], path: Path) -> None:
    """Loss (train and val) on the left; every other train_/val_ figure of the records on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    epochs = [r["epoch"] for r in records]
    keys = [k for k in records[-1] if k.startswith(("train_", "val_")) and isinstance(records[-1][k], (int, float))]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for key in keys:
        ax = ax_loss if key.endswith("loss") else ax_metric
        ax.plot(epochs, [r.get(key, float("nan")) for r in records], label=key.replace("_", " "),
                linestyle="--" if key.startswith("val_") and not key.endswith(("loss", "top1")) else "-")  # fmt: skip
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_metric.set(xlabel="epoch", title="metrics")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    with atomic_writer(path) as f:
        fig.savefig(f, format="png", dpi=100)
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
    with atomic_writer(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
