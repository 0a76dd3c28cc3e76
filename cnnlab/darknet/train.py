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
which the hook after each update writes. What it shares with ``detector train`` is in
:mod:`cnnlab.darknet.training`.

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

from cnnlab.darknet.augment import Augment
from cnnlab.darknet.cfg import label_of, resolve_data_path as _resolve
from cnnlab.darknet.log import BackupWriter, DarknetLog
from cnnlab.darknet.samples import ListBadImages, RunOrder, TrainSamples, ValidImages
from cnnlab.darknet.task import DarknetClassify
from cnnlab.darknet.training import BackupPlan, EvalSchedule, RunJob, basecfg, darknet_feed, darknet_header, net_training, open_net
from cnnlab.darknet.training import read_list, refuse_overwrite, run_updates, sgd_trainer, start_run, train_list, valid_list
from cnnlab.engine.loop import Trainer
from cnnlab.engine.state import TrainState
from cnnlab.engine.task import Report
from cnnlab.errors import CnnlabError

__all__ = ["BackupPlan", "basecfg", "label_of", "plan_backups", "train_classifier"]


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


def _has_yolo_label(image: Path) -> bool:
    """Whether either darknet would find a YOLO label file for ``image`` (a detection data set)."""
    from cnnlab.data.sources.yolo_labels import label_path

    return any(Path(label_path(str(image), flavor)).is_file() for flavor in ("alexeyab", "pjreddie"))


@dataclass
class Job(RunJob):
    """A checked ``classifier train``: besides the run's, the class labels and the images that have one."""

    labels: list[str]  # one per class
    kept: list[tuple[str, int]]  # the train= images with a label, and the label
    top: int  # the .data top=


def check_job(data: str, cfg: str, flavor: str, max_batches: int | None, topk: bool) -> Job:
    """Every check that needs no weights, so that a bad cfg or .data is one line, not a layer table."""
    data_file, options, model = open_net(data, cfg, DarknetClassify, flavor)
    t, backup = net_training(model, cfg, options, data_file, max_batches)
    label_key = "labels" if "labels" in options else "names"
    listing, paths = train_list(options, data_file, "data/train.list")
    if label_key == "names" and paths and _has_yolo_label(_resolve(paths[0], data_file)):
        raise CnnlabError(
            f"{data_file} is a detection .data file (names=, and its images have YOLO .txt labels) but {cfg} is a classifier; "
            "train it with `cnnlab darknet detector train`, or give a classification .data (labels=) whose folders name the classes"
        )
    labels = read_list(_resolve(options.get(label_key, "data/labels.list"), data_file), f"label list (from '{label_key}=')", data_file)
    classes = int(options["classes"]) if options.get("classes", "").lstrip("-").isdecimal() else len(labels)
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
        valid = [(p, label_of(p, labels)) for p in valid_list(options, data_file, "data/train.list")]
    top = int(options.get("top", "5") or 5)
    return Job(data_file=data_file, base=basecfg(cfg), model=model, t=t, backup=backup, listing=listing, paths=paths, valid=valid,
               labels=labels, kept=kept, top=top)  # fmt: skip


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
    model = job.model
    start_run(log, job, weights, allow_partial, clear)
    if len(job.kept) < len(job.paths):
        example = next(p for p in job.paths if label_of(p, job.labels) < 0)
        log.warn(f"warning: {len(job.paths) - len(job.kept)} of {len(job.paths)} images match no label and are skipped (e.g. {example})")
    plan = _backup_plan(job, flavor, weights, force)
    darknet_header(model, flavor)
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
    refuse_overwrite(plan.files(), weights, force)
    return plan


def _train(job: Job, augment: Augment, writer: BackupWriter, log: DarknetLog, seed: int) -> list[str]:
    """The engine's loop (:func:`cnnlab.darknet.training.run_updates`) with the classifier's samples,
    loss, progress line and ``-topk``. Returns the unreadable images of the list that were met."""
    model, t, n = job.model, job.t, len(job.kept)
    header, start = model.header, model.header.seen // t.images_per_update
    order = RunOrder(n, seed)
    samples = TrainSamples(job.kept, job.data_file, order, augment, job.listing)
    feed = darknet_feed(samples, order, job, start, seed)
    task = DarknetClassify(job.labels, torch.device("cpu"), t.batch, t.subdivisions, job.top, min(job.top, len(job.labels)))
    trainer = sgd_trainer(model, task, t, start, seed)
    bad = ListBadImages(n, job.listing)

    def progress(state: TrainState) -> None:
        step = t.images_per_update
        log.update(state.step, header.seen, n, state.sums.pop("nll"), step, t.rate(state.step), t.max_batches, feed.take_loaded())

    run_updates(job, trainer, feed, bad, n, start, log, progress, TopKSchedule(job, trainer, log, seed), writer)
    return list(samples.bad)


class TopKSchedule(EvalSchedule):
    """AlexeyAB's ``-topk``: the accuracy on ``valid=`` every two epochs (at least every
    max(burn_in, 100) updates) and after the last update, by the engine's evaluation pass."""

    def __init__(self, job: Job, trainer: Trainer, log: DarknetLog, seed: int) -> None:
        model = job.model
        super().__init__(job, trainer, log, ValidImages(job.valid, job.data_file, model.width, model.height, model.flavor), seed)
        self.n = len(job.kept)

    def due(self, batch_num: int) -> bool:
        t = self.job.t
        return batch_num >= max(self.last + 2 * self.n // t.images_per_update, t.burn_in, 100) or batch_num == t.max_batches

    def show(self, report: Report) -> None:
        self.log.topk(report.line())
