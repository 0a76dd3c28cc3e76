"""``cnnlab darknet classifier train DATA CFG [WEIGHTS]``: darknet's classifier training, on cnnlab's engine.

What darknet does: the ``.data`` file's ``train=`` list, ``labels=``, ``classes=`` and ``backup=``;
the ``[net]`` hyper-parameters; SGD with momentum and decay on weights only; the loss of its softmax
+ cost layers; its progress line per update; and its backups as darknet ``.weights`` whose header
``seen`` counts the images trained on. The machinery is the engine's (:mod:`cnnlab.engine.loop`):
its step accumulates ``subdivisions`` micro-batches of ``batch / subdivisions`` images per update
and stops on a NaN loss, its optimizer groups decay only weights, its loader takes darknet's sample
order (:mod:`cnnlab.darknet.samples`) and counts unreadable images. Darknet's parts plug into it:
the loss (:mod:`cnnlab.darknet.task`), the ``[net]`` rate policies as a torch scheduler
(:mod:`cnnlab.darknet.schedule`), the printed lines (:mod:`cnnlab.darknet.log`) and the backups,
which the hook after each update writes.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
from torch.utils.data import SequentialSampler

from cnnlab.darknet.augment import Augment
from cnnlab.darknet.cfg import label_of, read_data_file, resolve_data_path as _resolve
from cnnlab.darknet.log import BackupWriter, DarknetLog
from cnnlab.darknet.model import DarknetNet
from cnnlab.darknet.samples import DarknetSampler, Feed, ListBadImages, RunOrder, TrainSamples, ValidImages
from cnnlab.darknet.schedule import DarknetRate, NetTraining
from cnnlab.darknet.task import AsIs, DarknetClassify
from cnnlab.darknet.textfiles import read_lines
from cnnlab.darknet.weights import WeightsHeader
from cnnlab.data.loader import BadImageLog, batch_loader
from cnnlab.engine.evaluate import evaluate
from cnnlab.engine.loop import Trainer, train_one_epoch
from cnnlab.engine.optim import build_optimizer
from cnnlab.engine.state import TrainState
from cnnlab.errors import CnnlabError

__all__ = ["BackupPlan", "basecfg", "label_of", "plan_backups", "train_classifier"]


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


def _read_lines(path: Path, what: str, data_file: Path, paths: bool = False) -> list[str]:
    try:
        # darknet reads bytes: a line that is not UTF-8 is read as cnnlab's darknet text files are
        return [line.strip() for line in read_lines(path, paths) if line.strip()]
    except OSError:
        raise CnnlabError(f"{data_file}: cannot read the {what} {str(path)!r}") from None


def _has_yolo_label(image: Path) -> bool:
    """Whether either darknet would find a YOLO label file for ``image`` (a detection data set)."""
    from cnnlab.data.sources.yolo_labels import label_path

    return any(Path(label_path(str(image), flavor)).is_file() for flavor in ("alexeyab", "pjreddie"))


@dataclass
class Job:
    """A checked ``classifier train``: the net and its [net] training, the lists, where backups go."""

    data_file: Path
    base: str
    model: DarknetNet
    t: NetTraining
    backup: Path
    labels: list[str]  # one per class
    listing: Path  # the train= list
    paths: list[str]  # its lines
    kept: list[tuple[str, int]]  # those with a label, and the label
    valid: list[tuple[str, int]]  # the valid= list with -topk, else empty
    top: int  # the .data top=


def check_job(data: str, cfg: str, flavor: str, max_batches: int | None, topk: bool) -> Job:
    """Every check that needs no weights, so that a bad cfg or .data is one line, not a layer table."""
    data_file = Path(data)
    options = read_data_file(data_file)
    model = DarknetClassify.build_model(cfg, {"flavor": flavor})
    DarknetClassify.check_model(model)
    t = NetTraining.from_net(model.net_options)
    if max_batches is not None:
        t.max_batches = max_batches
    if t.max_batches <= 0:
        raise CnnlabError(f"{cfg}: [net] max_batches={t.max_batches} would train forever; set max_batches= or pass --max-batches N")
    backup = Path(options.get("backup", "/backup/"))
    if not backup.is_dir():
        raise CnnlabError(f"{data_file}: backup directory {str(backup)!r} (from 'backup=') does not exist; create it or set backup= to a folder")
    label_key = "labels" if "labels" in options else "names"
    listing = _resolve(options.get("train", "data/train.list"), data_file)
    paths = _read_lines(listing, "training list (from 'train=')", data_file, paths=True)
    if label_key == "names" and paths and _has_yolo_label(_resolve(paths[0], data_file)):
        raise CnnlabError(
            f"{data_file} is a detection .data file (names=, and its images have YOLO .txt labels) but {cfg} is a classifier; "
            "train it with `cnnlab darknet detector train`, or give a classification .data (labels=) whose folders name the classes"
        )
    labels = _read_lines(_resolve(options.get(label_key, "data/labels.list"), data_file), f"label list (from '{label_key}=')", data_file)
    classes = int(options["classes"]) if options.get("classes", "").lstrip("-").isdigit() else len(labels)
    if classes != model.classes:
        raise CnnlabError(f"{data_file}: classes={classes} but {cfg} outputs {model.classes}; set classes={model.classes} or use the matching cfg")
    if len(labels) < classes:
        raise CnnlabError(f"{data_file}: the label list has {len(labels)} lines but classes={classes}; give one label per class")
    labels = labels[:classes]
    kept = [(p, y) for p in paths if (y := label_of(p, labels)) >= 0]
    if not kept:
        raise CnnlabError(f"{listing}: no image path has a folder (or file name) matching a label of {options.get(label_key)}; check labels=")
    valid: list[tuple[str, int]] = []
    if topk:
        valid_list = _resolve(options.get("valid", "data/train.list"), data_file)
        valid = [(p, label_of(p, labels)) for p in _read_lines(valid_list, "validation list (from 'valid=')", data_file, paths=True)]
    top = int(options.get("top", "5") or 5)
    return Job(data_file, basecfg(cfg), model, t, backup, labels, listing, paths, kept, valid, top)


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
    log = DarknetLog(flavor, out or sys.stdout, err or sys.stderr)
    job = check_job(data, cfg, flavor, max_batches, topk)
    model, t = job.model, job.t
    log.opening(job.base, model.layer_table())
    if weights:
        log.loading(weights)
        model.load_weights(weights, allow_partial=allow_partial)
        log.warn("Done!")
    if clear:
        model.header.seen = 0
    log.hyper(t.learning_rate, t.momentum, t.decay, len(job.paths))
    if len(job.kept) < len(job.paths):
        example = next(p for p in job.paths if label_of(p, job.labels) < 0)
        log.warn(f"warning: {len(job.paths) - len(job.kept)} of {len(job.paths)} images match no label and are skipped (e.g. {example})")
    plan = _backup_plan(job, flavor, weights, force)
    # darknet writes version 0.2.0 (pjreddie) / 0.2.5 (AlexeyAB) headers with a 64-bit seen
    model.header = WeightsHeader(0, 2, 0 if flavor == "pjreddie" else 5, model.header.seen, 8)
    augment = Augment(model.net_options, model.width, model.height, seed, flavor)
    for key in augment.unsupported:
        log.warn(f"warning: [net] {key}= is not implemented by cnnlab's darknet training and is ignored")
    writer = BackupWriter(model, plan, log)
    unreadable = _train(job, augment, writer, log, seed)
    final = writer.final()
    log.skipped(unreadable)
    return final


def _backup_plan(job: Job, flavor: str, weights: str | None, force: bool) -> BackupPlan:
    """The files this run writes; refuses to overwrite any but the weights it resumes from, unless ``force``."""
    step = job.t.images_per_update
    plan = plan_backups(flavor, job.backup, job.base, job.model.header.seen // step, job.t.max_batches, step, len(job.kept))
    resumed_from = Path(weights).resolve() if weights else None
    clash = [p for p in plan.files() if p.exists() and p.resolve() != resumed_from]
    if clash and not force:
        raise CnnlabError(
            f"{clash[0]} exists{f' (and {len(clash) - 1} more of the files this run writes)' if len(clash) > 1 else ''}; "
            "pass --force to overwrite, or set backup= to another folder"
        )
    return plan


def _train(job: Job, augment: Augment, writer: BackupWriter, log: DarknetLog, seed: int) -> list[str]:
    """The engine's epoch loop over the updates from the header's ``seen`` to ``max_batches``: one
    ``train_step`` per micro-batch, an update every ``subdivisions``; after each, darknet's hook.
    Returns the unreadable images of the list that were met."""
    model, t, n = job.model, job.t, len(job.kept)
    step, header = t.images_per_update, model.header
    start = header.seen // step
    order = RunOrder(n, seed)
    samples = TrainSamples(job.kept, job.data_file, order, augment, job.listing)
    sampler = DarknetSampler(order, header.seen, header.seen + max(0, t.max_batches - start) * step)
    feed = Feed(batch_loader(samples, sampler, t.batch, workers=0, drop_last=False, pin_memory=False, seed=seed), samples)
    cpu = torch.device("cpu")
    task = DarknetClassify(job.labels, cpu, t.batch, t.subdivisions, job.top, min(job.top, len(job.labels)))
    optimizer = build_optimizer(model, "sgd", t.learning_rate, t.momentum, False, t.decay, no_decay_bn_bias=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    trainer = Trainer(model, task, AsIs(), optimizer, DarknetRate(optimizer, t, start), scaler, None, cpu, None, t.subdivisions, seed=seed)
    bad = ListBadImages(n, job.listing)
    topk = TopKSchedule(job, trainer, log, seed)

    def after_update(state: TrainState, losses: dict[str, float]) -> None:
        # state.step counts the updates from `start`: it is darknet's batch number
        header.seen += step
        state.epoch = header.seen // n  # darknet's epoch, for the engine's messages
        log.bad_images(list(bad.bad))
        bad.check()
        log.update(state.step, header.seen, n, state.sums.pop("nll"), step, t.rate(state.step), t.max_batches, feed.take_loaded())
        topk.after_update(state.step)
        writer.after_update(state.step)
        log.mark()

    log.mark()
    train_one_epoch(trainer, feed, TrainState(step=start, epoch=header.seen // n), bad, after_update)
    return list(samples.bad)


class TopKSchedule:
    """AlexeyAB's ``-topk``: the accuracy on ``valid=`` every two epochs (at least every
    max(burn_in, 100) updates) and after the last update, by the engine's evaluation pass."""

    def __init__(self, job: Job, trainer: Trainer, log: DarknetLog, seed: int) -> None:
        self.job, self.trainer, self.log = job, trainer, log
        self.last = job.model.header.seen // job.t.images_per_update
        model = job.model
        images = ValidImages(job.valid, job.data_file, model.width, model.height, model.flavor)
        self.loader = batch_loader(images, SequentialSampler(images), job.t.batch, workers=0, drop_last=False, pin_memory=False, seed=seed)
        self.bad = BadImageLog(1.0)

    def after_update(self, batch_num: int) -> None:
        t, n = self.job.t, len(self.job.kept)
        if not self.job.valid or not (batch_num >= max(self.last + 2 * n // t.images_per_update, t.burn_in, 100) or batch_num == t.max_batches):
            return
        self.last = batch_num
        tr = self.trainer
        report = evaluate(tr.model, self.loader, tr.normalize, tr.task.evaluator(), tr.device, tr.amp, self.bad)
        tr.model.train()  # evaluate leaves the net in eval mode; training goes on
        self.log.bad_images(list(self.bad.bad))
        self.log.topk(report.line())
