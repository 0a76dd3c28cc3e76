"""``cnnlab darknet classifier train DATA CFG [WEIGHTS]``: darknet's own classifier training loop.

What darknet does, in PyTorch: the ``.data`` file's ``train=`` list, ``labels=``, ``classes=`` and
``backup=``; the ``[net]`` hyper-parameters (:mod:`cnnlab.darknet.schedule`); SGD with darknet's
update (momentum, decay on weights only, the rate of the counter the update reaches); the loss of
its softmax + cost layers (cross-entropy on the softmax, mean per image); its progress line per
update; and its backups as darknet ``.weights`` whose header ``seen`` counts the images trained on.

Resuming is darknet's: pass a backup as WEIGHTS and its ``seen`` restarts the counter, the rate
schedule and (here) the image order. Differences, on purpose: labels are the folder that carries
the class name exactly (darknet's substring search labels ``.../class_10/x.png`` as ``class_1``),
the image order is a seeded shuffle per epoch instead of sampling with replacement, existing
weights are never overwritten without ``--force``. Augmentation is darknet's (crop, angle, aspect,
flip, hue, saturation, exposure; :mod:`cnnlab.darknet.augment`), seeded per sample; AlexeyAB's
mixup/cutmix/mosaic, blur and label smoothing are not implemented (a warning says so).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.darknet.augment import Augment
from cnnlab.darknet.cfg import label_of, read_data_file, resolve_data_path as _resolve
from cnnlab.darknet.model import DarknetNet, load_darknet
from cnnlab.darknet.preprocess import load_image
from cnnlab.darknet.schedule import NetTraining
from cnnlab.darknet.weights import WeightsHeader
from cnnlab.errors import CnnlabError


def basecfg(cfg: str) -> str:
    """darknet ``basecfg``: the file name up to its first dot."""
    return Path(cfg).name.split(".")[0]


@dataclass
class BackupPlan:
    """Which ``.weights`` files the run writes, and after which update (darknet's schedule per flavor)."""

    final: Path
    periodic: Path  # pjreddie <base>.backup every 1000 updates; AlexeyAB <base>_last.weights every 100
    saves: dict[int, list[Path]]  # update number → files written after it (besides the final one)

    def files(self) -> list[Path]:
        seen: dict[Path, None] = {}
        for paths in self.saves.values():
            seen.update(dict.fromkeys(paths))
        return [self.final, *seen]


def plan_backups(flavor: str, backup: Path, base: str, start: int, end: int, images_per_update: int, n_images: int) -> BackupPlan:
    saves: dict[int, list[Path]] = {}
    if flavor == "pjreddie":
        periodic = backup / f"{base}.backup"
        epoch = start * images_per_update // n_images
        for b in range(start + 1, end + 1):
            e = b * images_per_update // n_images
            if e > epoch:  # a new epoch completed: <base>_<epoch>.weights
                epoch = e
                saves.setdefault(b, []).append(backup / f"{base}_{e}.weights")
            if b % 1000 == 0:
                saves.setdefault(b, []).append(periodic)
        return BackupPlan(backup / f"{base}.weights", periodic, saves)
    periodic = backup / f"{base}_last.weights"
    it_save = it_last = start
    for b in range(start + 1, end + 1):
        if b >= it_save + 1000:
            it_save = b
            saves.setdefault(b, []).append(backup / f"{base}_{b}.weights")
        if b >= it_last + 100:
            it_last = b
            saves.setdefault(b, []).append(periodic)
    return BackupPlan(backup / f"{base}_final.weights", periodic, saves)


def _read_lines(path: Path, what: str, data_file: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        raise CnnlabError(f"{data_file}: cannot read the {what} {str(path)!r}") from None


def _optimizer(model: DarknetNet, t: NetTraining) -> torch.optim.SGD:
    # darknet decays the weights of conv/connected/local layers only; biases and BN scales are not decayed
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    plain = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decayed, "weight_decay": t.decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=t.learning_rate, momentum=t.momentum)


def train_classifier(
    data: str,
    cfg: str,
    weights: str | None = None,
    flavor: str = "pjreddie",
    max_batches: int | None = None,
    force: bool = False,
    clear: bool = False,
    allow_partial: bool = False,
    seed: int = 0,
    topk: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> Path:
    """Train ``cfg`` on the ``train=`` list of ``data``; returns the final weights' path.

    ``topk`` (AlexeyAB's ``-topk``): every two epochs (at least every max(burn_in, 100) updates) and at
    the end, the top-k accuracy (``top=``, default 5) on the ``valid=`` list."""
    out, err = out or sys.stdout, err or sys.stderr
    data_file = Path(data)
    options = read_data_file(data_file)
    base = basecfg(cfg)
    # every check that needs no weights comes first, so a bad cfg/.data is one line, not a layer table
    model = load_darknet(cfg, None, flavor)
    if model.is_detector:
        raise CnnlabError(f"{cfg} is a detector ([yolo]/[region]); `classifier train` trains classifiers")
    t = NetTraining.from_net(model.net_options)
    if max_batches is not None:
        t.max_batches = max_batches
    if t.max_batches <= 0:
        raise CnnlabError(f"{cfg}: [net] max_batches={t.max_batches} would train forever; set max_batches= or pass --max-batches N")
    backup = Path(options.get("backup", "/backup/"))
    if not backup.is_dir():
        raise CnnlabError(f"{data_file}: backup directory {str(backup)!r} (from 'backup=') does not exist; create it or set backup= to a folder")
    label_key = "labels" if "labels" in options else "names"
    labels = _read_lines(_resolve(options.get(label_key, "data/labels.list"), data_file), f"label list (from '{label_key}=')", data_file)
    classes = int(options["classes"]) if options.get("classes", "").lstrip("-").isdigit() else len(labels)
    if classes != model.classes:
        raise CnnlabError(f"{data_file}: classes={classes} but {cfg} outputs {model.classes}; set classes={model.classes} or use the matching cfg")
    if len(labels) < classes:
        raise CnnlabError(f"{data_file}: the label list has {len(labels)} lines but classes={classes}; give one label per class")
    labels = labels[:classes]
    train_list = _resolve(options.get("train", "data/train.list"), data_file)
    paths = _read_lines(train_list, "training list (from 'train=')", data_file)
    ys = [label_of(p, labels) for p in paths]
    kept = [(p, y) for p, y in zip(paths, ys) if y >= 0]
    if not kept:
        raise CnnlabError(f"{train_list}: no image path has a folder (or file name) matching a label of {options.get(label_key)}; check labels=")

    valid: list[tuple[str, int]] = []
    top = int(options.get("top", "5") or 5)
    if topk:
        valid_list = _resolve(options.get("valid", "data/train.list"), data_file)
        valid = [(p, label_of(p, labels)) for p in _read_lines(valid_list, "validation list (from 'valid=')", data_file)]

    print(base, file=out)
    print(1, file=out)  # darknet prints its GPU count
    print(model.layer_table(), file=err)
    if weights:
        print(f"Loading weights from {weights}...", end="", file=err)
        model.load_weights(weights, allow_partial=allow_partial)
        print("Done!", file=err)
    if clear:
        model.header.seen = 0
    print(f"Learning Rate: {t.learning_rate:g}, Momentum: {t.momentum:g}, Decay: {t.decay:g}", file=out)
    print(len(paths), file=out)
    if len(kept) < len(paths):
        print(f"warning: {len(paths) - len(kept)} of {len(paths)} images match no label and are skipped (e.g. {next(p for p, y in zip(paths, ys) if y < 0)})", file=err)
    n = len(kept)

    step = t.images_per_update
    start = model.header.seen // step
    plan = plan_backups(flavor, backup, base, start, t.max_batches, step, n)
    resumed_from = Path(weights).resolve() if weights else None
    clash = [p for p in plan.files() if p.exists() and p.resolve() != resumed_from]
    if clash and not force:
        raise CnnlabError(
            f"{clash[0]} exists{f' (and {len(clash) - 1} more of the files this run writes)' if len(clash) > 1 else ''}; "
            "pass --force to overwrite, or set backup= to another folder"
        )
    # darknet writes version 0.2.0 (pjreddie) / 0.2.5 (AlexeyAB) headers with a 64-bit seen
    header = WeightsHeader(0, 2, 0 if flavor == "pjreddie" else 5, model.header.seen, 8)
    model.header = header

    augment = Augment(model.net_options, model.width, model.height, seed, flavor)
    for key in augment.unsupported:
        print(f"warning: [net] {key}= is not implemented by cnnlab's darknet training and is ignored", file=err)
    optimizer = _optimizer(model, t)
    model.train()
    avg_loss = -1.0
    batch_num = start
    bad: dict[str, str] = {}  # unreadable images: skipped, counted, reported; fatal above 1 % of the list

    def sample(k: int) -> tuple[np.ndarray, int]:
        """Sample k of the run (augmented image, label); an unreadable image is replaced by the next one."""
        for j in range(k, k + n):
            path, label = kept[_sample(j, n, seed)]
            if path in bad:
                continue
            try:
                return augment(load_image(_resolve(path, data_file)), k), label
            except CnnlabError as e:
                bad[path] = str(e)
                print(f"warning: skipping {path}: {e}", file=err)
                if len(bad) > max(1, n // 100):
                    raise CnnlabError(f"{len(bad)} of the {n} images in {train_list} cannot be read (limit 1 %); fix or remove them") from None
        raise CnnlabError(f"none of the images in {train_list} can be read")

    iter_topk = start
    while batch_num < t.max_batches:
        t0 = time.perf_counter()
        micro = []
        for m in range(t.subdivisions):
            first = header.seen + m * t.batch
            xs, ys_ = zip(*(sample(first + k) for k in range(t.batch)))
            micro.append((torch.from_numpy(np.stack(xs)), torch.tensor(ys_)))
        print(f"Loaded: {time.perf_counter() - t0:f} seconds", file=out)
        t0 = time.perf_counter()
        loss_sum = 0.0
        for x, y in micro:
            loss = F.nll_loss(model.forward_log_probs(x), y, reduction="sum")
            (loss / step).backward()
            loss_sum += loss.item()
        header.seen += step
        batch_num = header.seen // step
        for g in optimizer.param_groups:
            g["lr"] = t.rate(batch_num)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss_sum / step
        if not np.isfinite(loss_value):
            raise CnnlabError(f"loss became {loss_value} at batch {batch_num}; lower learning_rate= (or add burn_in=) in [net]")
        avg_loss = loss_value if avg_loss == -1 else avg_loss
        avg_loss = avg_loss * 0.9 + loss_value * 0.1
        line = (
            f"{batch_num}, {np.float32(header.seen) / np.float32(n):.3f}: {loss_value:f}, {avg_loss:f} avg, "
            f"{t.rate(batch_num):f} rate, {time.perf_counter() - t0:f} seconds, {header.seen} images"
        )
        if flavor == "alexeyab":
            left = (t.max_batches - batch_num) * (time.perf_counter() - t0) / 3600
            line += f", {left:f} hours left"
        print(line, file=out, flush=True)
        if valid and (batch_num >= max(iter_topk + 2 * n // step, t.burn_in, 100) or batch_num == t.max_batches):
            iter_topk = batch_num
            acc = topk_accuracy(model, valid, data_file, flavor, min(top, classes))
            print(f" TOP calculation...\n\n accuracy top{top} = {acc:f} ", file=out, flush=True)
        for p in plan.saves.get(batch_num, []):
            _save(model, p, err)
    _save(model, plan.final, err)
    if bad:
        print(f"skipped {len(bad)} unreadable image(s): {', '.join(sorted(bad))}", file=err)
    return plan.final


def topk_accuracy(model: DarknetNet, valid: list[tuple[str, int]], data_file: Path, flavor: str, k: int) -> float:
    """Fraction of ``valid`` whose label is in the top ``k``, with the flavor's classifier preprocessing
    (as ``classifier valid``); images without a label count as wrong."""
    from cnnlab.darknet.preprocess import preprocess

    model.eval()
    hits = 0
    with torch.no_grad():
        for path, label in valid:
            x = preprocess(load_image(_resolve(path, data_file)), model.width, model.height, flavor, "classify")
            probs = model(torch.from_numpy(x)[None])[0]
            hits += label in torch.topk(probs, k).indices.tolist()
    model.train()
    return hits / max(1, len(valid))


def _sample(k: int, n: int, seed: int) -> int:
    """The image of the run's k-th sample: epoch k // n walks a seeded permutation of the n images,
    so the order depends only on ``seen`` and a resumed run continues it."""
    epoch, pos = divmod(k, n)
    return int(_permutation(seed, epoch, n)[pos])


@lru_cache(maxsize=2)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _save(model: DarknetNet, path: Path, err: TextIO) -> None:
    print(f"Saving weights to {path}", file=err)
    model.save_weights(path)
