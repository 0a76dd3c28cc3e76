"""``cnnlab darknet detector train DATA CFG [WEIGHTS]``: darknet's detector training, on cnnlab's engine.

The same shape as :mod:`cnnlab.darknet.train` (the classifier): the ``.data`` file's ``train=``,
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
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
from torch.utils.data import SequentialSampler

from cnnlab.darknet.box_augment import BoxAugment
from cnnlab.darknet.cfg import read_data_file, resolve_data_path as _resolve
from cnnlab.darknet.detector_samples import DetectionSamples, NetSizes, ValidDetections
from cnnlab.darknet.detector_task import DarknetDetect, MapSettings
from cnnlab.darknet.log import BackupWriter, DarknetLog
from cnnlab.darknet.model import DarknetNet
from cnnlab.darknet.samples import DarknetSampler, Feed, ListBadImages, RunOrder
from cnnlab.darknet.schedule import DarknetRate, NetTraining
from cnnlab.darknet.task import AsIs
from cnnlab.darknet.train import BackupPlan, _read_lines, basecfg
from cnnlab.darknet.train_keys import unimplemented_keys
from cnnlab.darknet.weights import WeightsHeader
from cnnlab.data.loader import BadImageLog, batch_loader
from cnnlab.data.sources.yolo_labels import YoloSource
from cnnlab.engine.evaluate import evaluate
from cnnlab.engine.loop import Trainer, train_one_epoch
from cnnlab.engine.optim import build_optimizer
from cnnlab.engine.state import TrainState
from cnnlab.errors import CnnlabError


@dataclass
class DetectJob:
    """A checked ``detector train``: the net and its [net] training, the lists, where backups go."""

    data_file: Path
    base: str
    model: DarknetNet
    t: NetTraining
    backup: Path
    names: list[str]
    listing: Path  # the train= list
    paths: list[str]
    valid: list[str]  # the valid= list (train= when missing, as darknet) when -map is given
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
    data_file = Path(data)
    options = read_data_file(data_file)
    model = DarknetDetect.build_model(cfg, {"flavor": flavor})
    DarknetDetect.check_model(model)
    check_classification_data(options, data_file, cfg)
    t = NetTraining.from_net(model.net_options)
    if max_batches is not None:
        t.max_batches = max_batches
    if t.max_batches <= 0:
        raise CnnlabError(f"{cfg}: [net] max_batches={t.max_batches} would train forever; set max_batches= or pass --max-batches N")
    backup = Path(options.get("backup", "/backup/"))
    if not backup.is_dir():
        raise CnnlabError(f"{data_file}: backup directory {str(backup)!r} (from 'backup=') does not exist; create it or set backup= to a folder")
    names = _read_lines(_resolve(options.get("names", "data/names.list"), data_file), "names list (from 'names=')", data_file)
    if len(names) != model.classes:
        raise CnnlabError(f"{data_file}: the names list has {len(names)} lines but {cfg}'s last detection layer has classes={model.classes}; make them equal")
    if options.get("classes", "").isdigit() and int(options["classes"]) != model.classes:
        raise CnnlabError(f"{data_file}: classes={options['classes']} but {cfg} detects {model.classes} classes; set classes={model.classes}")
    listing = _resolve(options.get("train", "data/train.txt"), data_file)
    paths = _read_lines(listing, "training list (from 'train=')", data_file, paths=True)
    valid: list[str] = []
    if calc_map:
        valid_list = _resolve(options.get("valid", options.get("train", "data/train.txt")), data_file)
        valid = _read_lines(valid_list, "validation list (from 'valid=')", data_file, paths=True)
    save_after = int(options.get("saveweights", 1000 if t.max_batches < 10000 else 10000))
    save_last = int(options.get("savelast", 100))
    return DetectJob(data_file, basecfg(cfg), model, t, backup, names, listing, paths, valid, save_after, save_last)


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
    log.opening(job.base, model.layer_table())
    if weights:
        log.loading(weights)
        model.load_weights(weights, allow_partial=allow_partial)
        log.warn("Done!")
    if clear:
        model.header.seen = 0
    log.hyper(job.t.learning_rate, job.t.momentum, job.t.decay, len(job.paths))
    plan = _backup_plan(job, flavor, weights, force)
    model.header = WeightsHeader(0, 2, 0 if flavor == "pjreddie" else 5, model.header.seen, 8)
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
    resumed_from = Path(weights).resolve() if weights else None
    files = plan.files() + ([job.backup / f"{job.base}_best.weights"] if job.valid else [])
    clash = [p for p in files if p.exists() and p.resolve() != resumed_from]
    if clash and not force:
        raise CnnlabError(
            f"{clash[0]} exists{f' (and {len(clash) - 1} more of the files this run writes)' if len(clash) > 1 else ''}; "
            "pass --force to overwrite, or set backup= to another folder"
        )
    return plan


def _train(job: DetectJob, augment: BoxAugment, writer: BackupWriter, log: DarknetLog, seed: int, flavor: str, evaluation: MapSettings) -> list[str]:
    """The engine's loop over the updates from the header's ``seen`` to ``max_batches``."""
    model, t, n = job.model, job.t, len(job.paths)
    step, header = t.images_per_update, model.header
    start = header.seen // step
    labels = YoloSource(job.paths, job.names, flavor)
    for line in labels.scan().lines():  # boxes fixed or dropped, missing and unreadable label files
        log.warn(line)
    order = RunOrder(n, seed)
    sizes = NetSizes(model.width, model.height, augment, t.max_batches, seed)
    samples = DetectionSamples(job.paths, labels, job.data_file, order, augment, sizes, step, seed, job.listing)
    sampler = DarknetSampler(order, header.seen, header.seen + max(0, t.max_batches - start) * step)
    feed = Feed(batch_loader(samples, sampler, t.batch, workers=0, drop_last=False, pin_memory=False, seed=seed), samples)
    cpu = torch.device("cpu")
    task = DarknetDetect(job.names, cpu, t.batch, t.subdivisions, evaluation)
    task.seen = header.seen
    optimizer = build_optimizer(model, "sgd", t.learning_rate, t.momentum, False, t.decay, no_decay_bn_bias=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    trainer = Trainer(model, task, AsIs(), optimizer, DarknetRate(optimizer, t, start), scaler, None, cpu, None, t.subdivisions, seed=seed)
    bad = ListBadImages(n, job.listing)
    valid_labels = YoloSource(job.valid, job.names, flavor)
    maps = MapSchedule(job, trainer, log, evaluation, writer, valid_labels, seed)

    def after_update(state: TrainState, losses: dict[str, float]) -> None:
        header.seen += step
        task.seen = header.seen
        state.epoch = header.seen // n
        log.bad_images(list(bad.bad))
        bad.check()
        log.detection_layers([layer.line() for layer in task.last_layers])
        log.detector_update(state.step, state.sums.pop("cost"), step, t.rate(state.step), t.max_batches, feed.take_loaded())
        maps.after_update(state.step)
        writer.after_update(state.step)
        log.mark()

    log.mark()
    train_one_epoch(trainer, feed, TrainState(step=start, epoch=header.seen // n), bad, after_update)
    return list(samples.bad)


class MapSchedule:
    """AlexeyAB's ``-map``: mAP on ``valid=`` every 4 epochs (at least every 100 updates) and after the
    last update; ``_best.weights`` when it is at least the best so far."""

    def __init__(self, job: DetectJob, trainer: Trainer, log: DarknetLog, evaluation: MapSettings, writer: BackupWriter, labels: YoloSource, seed: int) -> None:
        self.job, self.trainer, self.log, self.writer = job, trainer, log, writer
        self.last = job.model.header.seen // job.t.images_per_update
        self.best = -1.0
        model = job.model
        letter = bool(model.net_options.int("letter_box", 0))
        self.images = ValidDetections(job.valid, labels, job.data_file, model.width, model.height, letter)
        evaluation.letter, evaluation.size_of = letter, self.images.size_of
        self.loader = batch_loader(self.images, SequentialSampler(self.images), job.t.batch, workers=0, drop_last=False, pin_memory=False, seed=seed)
        self.bad = BadImageLog(1.0)
        self.every = max(4 * len(job.paths) // job.t.images_per_update, 100)

    def after_update(self, batch_num: int) -> None:
        if not self.job.valid or not (batch_num >= self.last + self.every or batch_num == self.job.t.max_batches):
            return
        self.last = batch_num
        tr = self.trainer
        report = evaluate(tr.model, self.loader, tr.normalize, tr.task.evaluator(), tr.device, tr.amp, self.bad)
        tr.model.train()
        report.names = self.job.names
        self.log.bad_images(list(self.bad.bad))
        self.log.info(report.table())
        self.log.info(f"\n mean_average_precision (mAP@{report.result.iou_thresh:0.2f}) = {report.primary:f} ")
        if report.primary >= self.best:
            self.best = report.primary
            self.log.info("New best mAP!")
            self.writer.save(self.job.backup / f"{self.job.base}_best.weights")
