"""``cnnlab darknet detector train DATA CFG [WEIGHTS]``: darknet's detector training, on cnnlab's engine.

The same shape as :mod:`cnnlab.darknet.train` (the classifier), with the parts they share in
:mod:`cnnlab.darknet.training`: the ``.data`` file's ``train=``,
``valid=``, ``names=`` and ``backup=``; the ``[net]`` hyper-parameters and rate policies; SGD on the
engine's step with ``subdivisions`` micro-batches per update. What detection adds: boxes read from
YOLO label files (:mod:`cnnlab.darknet.detector_samples`), darknet's detection augmentation and
multi-scale sizes, the loss of the [yolo]/[region] layers (:mod:`cnnlab.darknet.detector_task`),
AlexeyAB's ``-map`` (mAP on ``valid=`` every 4 epochs, at least every 100 updates, and at the end,
with ``_best.weights``) and the backups of each flavor (AlexeyAB: ``_last`` every 100 updates, ``_N``
every 1000 — 10000 for long runs — ``_final``; pjreddie: ``.backup`` every 100, ``_N`` every 100
below 1000 and every 10000, ``_final``).

Differences, on purpose: the batch size stays the cfg's when ``random=1`` changes the input size
(AlexeyAB also scales the batch); the image order is a seeded shuffle per epoch; the sizes and the
augmentation are seeded by the update and the sample, so a run resumed from ``_last.weights`` sees
the same images and sizes as the uninterrupted run; existing weights are never overwritten without
``--force``.

Not copied, because they are bugs of AlexeyAB's CPU build only (its GPU build and pjreddie's CPU
build train correctly; see bench/RESULTS.md, ``bench/detect.py``): since AlexeyAB 24bb6a8e the CPU
``forward_network`` zeroes only the deltas of layers with ``l.train`` set (convolutional, maxpool,
shortcut, batchnorm…), so the deltas of ``[route]`` and ``[upsample]`` layers add up over all
iterations; ``col2im_cpu_ext`` clears the delta it writes, dropping what a later layer (a
``[route]``) already sent back; and ``backward_batchnorm_layer`` never computes the batch-norm
biases' gradient, so they stay at their initial value. cnnlab trains what the GPU build trains.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from cnnlab.darknet.box_augment import BoxAugment
from cnnlab.darknet.cfg import resolve_data_path as _resolve
from cnnlab.darknet.detector_samples import DetectionSamples, NetSizes, ValidDetections
from cnnlab.darknet.detector_task import DarknetDetect, MapReport, MapSettings
from cnnlab.darknet.log import BackupWriter, DarknetLog
from cnnlab.darknet.samples import ListBadImages, RunOrder
from cnnlab.darknet.train_keys import unimplemented_keys
from cnnlab.darknet.training import BackupPlan, EvalSchedule, RunJob, basecfg, darknet_feed, darknet_header, net_training, open_net
from cnnlab.darknet.training import read_list, refuse_overwrite, run_updates, sgd_trainer, start_run, train_list, valid_list
from cnnlab.data.sources.yolo_labels import YoloSource
from cnnlab.engine.loop import Trainer
from cnnlab.engine.state import TrainState
from cnnlab.errors import CnnlabError


@dataclass
class DetectJob(RunJob):
    """A checked ``detector train``: besides the run's (whose valid= is train= when missing, as in
    darknet, and given with -map), the class names and AlexeyAB's backup intervals."""

    names: list[str]
    save_after: int  # AlexeyAB saveweights=
    save_last: int  # AlexeyAB savelast=


def check_classification_data(options: dict[str, str], data_file: Path, cfg: str) -> None:
    """A classification .data (labels=/top=, no names=) given to a detector: one line naming both."""
    if "names" not in options and ("labels" in options or "top" in options):
        raise CnnlabError(
            f"{data_file} is a classification .data file (labels=, no names=) but {cfg} is a detector; give a detection "
            ".data (classes=, train=, valid=, names=, backup=) whose images have YOLO .txt labels"
        )


def check_detector_job(data: str, cfg: str, flavor: str, max_batches: int | None, calc_map: bool) -> DetectJob:
    """Every check that needs no weights: a bad cfg or .data is one line, not a layer table."""
    data_file, options, model = open_net(data, cfg, DarknetDetect, flavor)
    check_classification_data(options, data_file, cfg)
    t, backup = net_training(model, cfg, options, data_file, max_batches)
    names = read_list(_resolve(options.get("names", "data/names.list"), data_file), "names list (from 'names=')", data_file)
    if len(names) != model.classes:
        raise CnnlabError(f"{data_file}: the names list has {len(names)} lines but {cfg}'s last detection layer has classes={model.classes}; make them equal")
    if options.get("classes", "").isdecimal() and int(options["classes"]) != model.classes:
        raise CnnlabError(f"{data_file}: classes={options['classes']} but {cfg} detects {model.classes} classes; set classes={model.classes}")
    listing, paths = train_list(options, data_file, "data/train.txt")
    valid = valid_list(options, data_file, options.get("train", "data/train.txt")) if calc_map else []
    save_after = int(options.get("saveweights", 1000 if t.max_batches < 10000 else 10000))
    save_last = int(options.get("savelast", 100))
    return DetectJob(data_file=data_file, base=basecfg(cfg), model=model, t=t, backup=backup, listing=listing, paths=paths, valid=valid,
                     names=names, save_after=save_after, save_last=save_last)  # fmt: skip


def plan_detector_backups(flavor: str, backup: Path, base: str, start: int, end: int, save_after: int, save_last: int) -> BackupPlan:
    """The weights files after each update, as each flavor's train_detector writes them."""
    saves: dict[int, list[Path]] = {}
    if flavor == "pjreddie":
        periodic = backup / f"{base}.backup"
        for b in range(start + 1, end + 1):
            if b % 100 == 0:
                saves.setdefault(b, []).append(periodic)
            if b % 10000 == 0 or (b < 1000 and b % 100 == 0):
                saves.setdefault(b, []).append(backup / f"{base}_{b}.weights")
        return BackupPlan(backup / f"{base}_final.weights", periodic, saves)
    periodic = backup / f"{base}_last.weights"
    it_save = it_last = start
    for b in range(start + 1, end + 1):
        if b >= it_save + save_after or b % save_after == 0:
            it_save = b
            saves.setdefault(b, []).append(backup / f"{base}_{b}.weights")
        if save_after > save_last and (b >= it_last + save_last or (b % save_last == 0 and b > 1)):
            it_last = b
            saves.setdefault(b, []).append(periodic)
    return BackupPlan(backup / f"{base}_final.weights", periodic, saves)


def train_detector(
    data: str,
    cfg: str,
    weights: str | None = None,
    *,
    flavor: str = "alexeyab",
    max_batches: int | None = None,
    force: bool = False,
    clear: bool = False,
    allow_partial: bool = False,
    seed: int = 0,
    calc_map: bool = False,
    iou_thresh: float = 0.5,
    thresh: float = 0.25,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> Path:
    """Train ``cfg`` on the ``train=`` list of ``data``; returns the final weights' path."""
    log = DarknetLog(flavor, out or sys.stdout, err or sys.stderr)
    torch.manual_seed(seed)  # the initial weights of layers WEIGHTS does not cover: a run is repeatable
    job = check_detector_job(data, cfg, flavor, max_batches, calc_map)
    model = job.model
    start_run(log, job, weights, allow_partial, clear)
    plan = _backup_plan(job, flavor, weights, force)
    darknet_header(model, flavor)
    augment = BoxAugment.from_net(model, flavor)
    for key in unimplemented_keys(model.sections):
        log.warn(f"warning: {key} is not implemented by cnnlab's detector training and is ignored")
    writer = BackupWriter(model, plan, log)
    unreadable = _train(job, augment, writer, log, seed, flavor, MapSettings(iou_thresh, thresh))
    final = writer.final()
    log.skipped(unreadable)
    return final


def _backup_plan(job: DetectJob, flavor: str, weights: str | None, force: bool) -> BackupPlan:
    step = job.t.images_per_update
    plan = plan_detector_backups(flavor, job.backup, job.base, job.model.header.seen // step, job.t.max_batches, job.save_after, job.save_last)
    refuse_overwrite(plan.files() + ([job.backup / f"{job.base}_best.weights"] if job.valid else []), weights, force)
    return plan


def _train(job: DetectJob, augment: BoxAugment, writer: BackupWriter, log: DarknetLog, seed: int, flavor: str, evaluation: MapSettings) -> list[str]:
    """The engine's loop (:func:`cnnlab.darknet.training.run_updates`) with the boxes, darknet's
    detection loss and printout, and ``-map``. Returns the unreadable images of the list that were met."""
    model, t, n = job.model, job.t, len(job.paths)
    header, start = model.header, model.header.seen // t.images_per_update
    labels = YoloSource(job.paths, job.names, flavor)
    for line in labels.scan().lines():  # boxes fixed or dropped, missing and unreadable label files
        log.warn(line)
    order = RunOrder(n, seed)
    sizes = NetSizes(model.width, model.height, augment, t.max_batches, seed)
    samples = DetectionSamples(job.paths, labels, job.data_file, order, augment, sizes, t.images_per_update, seed, job.listing)
    feed = darknet_feed(samples, order, job, start, seed)
    task = DarknetDetect(job.names, torch.device("cpu"), t.batch, t.subdivisions, evaluation)
    task.seen = header.seen
    trainer = sgd_trainer(model, task, t, start, seed)
    bad = ListBadImages(n, job.listing)
    maps = MapSchedule(job, trainer, log, evaluation, writer, YoloSource(job.valid, job.names, flavor), seed)

    def progress(state: TrainState) -> None:
        task.seen = header.seen
        log.detection_layers([layer.line() for layer in task.last_layers])
        log.detector_update(state.step, state.sums.pop("cost"), t.images_per_update, t.rate(state.step), t.max_batches, feed.take_loaded())

    run_updates(job, trainer, feed, bad, n, start, log, progress, maps, writer)
    return list(samples.bad)


class MapSchedule(EvalSchedule):
    """AlexeyAB's ``-map``: mAP on ``valid=`` every 4 epochs (at least every 100 updates) and after the
    last update; ``_best.weights`` when it is at least the best so far."""

    def __init__(self, job: DetectJob, trainer: Trainer, log: DarknetLog, evaluation: MapSettings, writer: BackupWriter, labels: YoloSource, seed: int) -> None:
        model = job.model
        letter = bool(model.net_options.int("letter_box", 0))
        images = ValidDetections(job.valid, labels, job.data_file, model.width, model.height, letter)
        evaluation.letter, evaluation.size_of = letter, images.size_of
        super().__init__(job, trainer, log, images, seed)
        self.names, self.writer, self.best = job.names, writer, -1.0
        self.every = max(4 * len(job.paths) // job.t.images_per_update, 100)

    def due(self, batch_num: int) -> bool:
        return batch_num >= self.last + self.every or batch_num == self.job.t.max_batches

    def show(self, report: MapReport) -> None:  # type: ignore[override]
        report.names = self.names
        self.log.info(report.table())
        self.log.info(f"\n mean_average_precision (mAP@{report.result.iou_thresh:0.2f}) = {report.primary:f} ")
        if report.primary >= self.best:
            self.best = report.primary
            self.log.info("New best mAP!")
            self.writer.save(self.job.backup / f"{self.job.base}_best.weights")
