"""What darknet's ``classifier train`` (:mod:`cnnlab.darknet.train`) and ``detector train``
(:mod:`cnnlab.darknet.detector_train`) share: the checks made before any weights load, the opening
lines, the guard against overwriting backups, the engine's trainer with darknet's SGD, the loop with
darknet's hook after each update, and the periodic evaluation on ``valid=`` (``-topk`` / ``-map``).
Each command keeps what is its own: its data, samples, loss, backup schedule and printed lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, SequentialSampler

from cnnlab.darknet.cfg import read_data_file, resolve_data_path
from cnnlab.darknet.log import BackupWriter, DarknetLog
from cnnlab.darknet.model import DarknetNet
from cnnlab.darknet.samples import DarknetSampler, Feed, ListBadImages, RunOrder
from cnnlab.darknet.schedule import DarknetRate, NetTraining
from cnnlab.darknet.task import AsIs
from cnnlab.darknet.textfiles import read_lines
from cnnlab.darknet.weights import WeightsHeader
from cnnlab.data.loader import BadImageLog, batch_loader
from cnnlab.engine.evaluate import evaluate
from cnnlab.engine.loop import Trainer, train_one_epoch
from cnnlab.engine.optim import build_optimizer
from cnnlab.engine.state import TrainState
from cnnlab.engine.task import Report, Task
from cnnlab.errors import CnnlabError


def basecfg(cfg: str) -> str:
    """darknet ``basecfg``: the file name up to its first dot."""
    return Path(cfg).name.split(".")[0]


@dataclass
class BackupPlan:
    """Which ``.weights`` files the run writes, and after which update (darknet's schedule per flavor)."""

    final: Path
    periodic: Path  # the file rewritten again and again (pjreddie <base>.backup; AlexeyAB <base>_last.weights)
    saves: dict[int, list[Path]]  # update number → files written after it (besides the final one)

    def files(self) -> list[Path]:
        seen: dict[Path, None] = {}
        for paths in self.saves.values():
            seen.update(dict.fromkeys(paths))
        return [self.final, *seen]


@dataclass
class RunJob:
    """A checked darknet training: the net and its [net] training, the train= list, where backups go."""

    data_file: Path
    base: str  # basecfg of the cfg: the backups' names
    model: DarknetNet
    t: NetTraining
    backup: Path
    listing: Path  # the train= list
    paths: list[str]  # its lines
    valid: list[Any]  # the valid= images with -topk / -map, else empty


def read_list(path: Path, what: str, data_file: Path, paths: bool = False) -> list[str]:
    """The non-empty lines of a list named by the .data file; one line naming both when it cannot be read."""
    try:
        # darknet reads bytes: a line that is not UTF-8 is read as cnnlab's darknet text files are
        return [line.strip() for line in read_lines(path, paths) if line.strip()]
    except OSError:
        raise CnnlabError(f"{data_file}: cannot read the {what} {str(path)!r}") from None


def open_net(data: str, cfg: str, task: type[Task], flavor: str) -> tuple[Path, dict[str, str], DarknetNet]:
    """The .data file, its options and the (checked) network of ``cfg`` for ``task``."""
    data_file = Path(data)
    options = read_data_file(data_file)
    model = task.build_model(cfg, {"flavor": flavor})
    task.check_model(model)
    return data_file, options, model


def net_training(model: DarknetNet, cfg: str, options: dict[str, str], data_file: Path, max_batches: int | None) -> tuple[NetTraining, Path]:
    """The [net] training (``max_batches`` overriding the cfg's) and the existing ``backup=`` folder."""
    t = NetTraining.from_net(model.net_options)
    if max_batches is not None:
        t.max_batches = max_batches
    if t.max_batches <= 0:
        raise CnnlabError(f"{cfg}: [net] max_batches={t.max_batches} would train forever; set max_batches= or pass --max-batches N")
    backup = Path(options.get("backup", "/backup/"))
    if not backup.is_dir():
        raise CnnlabError(f"{data_file}: backup directory {str(backup)!r} (from 'backup=') does not exist; create it or set backup= to a folder")
    return t, backup


def train_list(options: dict[str, str], data_file: Path, default: str) -> tuple[Path, list[str]]:
    """The ``train=`` list and its image paths."""
    listing = resolve_data_path(options.get("train", default), data_file)
    return listing, read_list(listing, "training list (from 'train=')", data_file, paths=True)


def valid_list(options: dict[str, str], data_file: Path, default: str) -> list[str]:
    """The image paths of the ``valid=`` list (``default`` when the .data names none)."""
    listing = resolve_data_path(options.get("valid", default), data_file)
    return read_list(listing, "validation list (from 'valid=')", data_file, paths=True)


def start_run(log: DarknetLog, job: RunJob, weights: str | None, allow_partial: bool, clear: bool) -> None:
    """darknet's opening: the layer table, the weights loaded (``-clear``: their ``seen`` back to 0), the
    hyper-parameters line."""
    model, t = job.model, job.t
    log.opening(job.base, model.layer_table())
    if weights:
        log.loading(weights)
        model.load_weights(weights, allow_partial=allow_partial)
        log.warn("Done!")
    if clear:
        model.header.seen = 0
    log.hyper(t.learning_rate, t.momentum, t.decay, len(job.paths))


def refuse_overwrite(files: list[Path], weights: str | None, force: bool) -> None:
    """Refuses to overwrite any of ``files`` but the weights the run resumes from, unless ``force``."""
    resumed_from = Path(weights).resolve() if weights else None
    clash = [p for p in files if p.exists() and p.resolve() != resumed_from]
    if clash and not force:
        raise CnnlabError(
            f"{clash[0]} exists{f' (and {len(clash) - 1} more of the files this run writes)' if len(clash) > 1 else ''}; "
            "pass --force to overwrite, or set backup= to another folder"
        )


def darknet_header(model: DarknetNet, flavor: str) -> None:
    """darknet writes version 0.2.0 (pjreddie) / 0.2.5 (AlexeyAB) headers with a 64-bit seen."""
    model.header = WeightsHeader(0, 2, 0 if flavor == "pjreddie" else 5, model.header.seen, 8)


def sgd_trainer(model: DarknetNet, task: Task, t: NetTraining, start: int, seed: int) -> Trainer:
    """The engine's trainer with darknet's SGD (decay on weights only), its [net] rate from update
    ``start``, and ``subdivisions`` micro-batches per update, on the CPU."""
    optimizer = build_optimizer(model, "sgd", t.learning_rate, t.momentum, False, t.decay, no_decay_bn_bias=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    cpu = torch.device("cpu")
    return Trainer(model, task, AsIs(), optimizer, DarknetRate(optimizer, t, start), scaler, None, cpu, None, t.subdivisions, seed=seed)


def darknet_feed(samples: Dataset, order: RunOrder, job: RunJob, start: int, seed: int) -> Feed:
    """The loader of the updates from ``start`` to ``max_batches`` in darknet's sample order."""
    t, seen = job.t, job.model.header.seen
    sampler = DarknetSampler(order, seen, seen + max(0, t.max_batches - start) * t.images_per_update)
    return Feed(batch_loader(samples, sampler, t.batch, workers=0, drop_last=False, pin_memory=False, seed=seed), samples)


class EvalSchedule:
    """A periodic evaluation of the training net on the ``valid=`` images by the engine's pass: after an
    update when :meth:`due`, printed by :meth:`show`. Nothing when the job has no valid images."""

    def __init__(self, job: RunJob, trainer: Trainer, log: DarknetLog, images: Dataset, seed: int) -> None:
        self.job, self.trainer, self.log = job, trainer, log
        self.last = job.model.header.seen // job.t.images_per_update
        self.loader = batch_loader(images, SequentialSampler(images), job.t.batch, workers=0, drop_last=False, pin_memory=False, seed=seed)
        self.bad = BadImageLog(1.0)

    def due(self, batch_num: int) -> bool:
        raise NotImplementedError

    def show(self, report: Report) -> None:
        raise NotImplementedError

    def after_update(self, batch_num: int) -> None:
        if not self.job.valid or not self.due(batch_num):
            return
        self.last = batch_num
        tr = self.trainer
        report = evaluate(tr.model, self.loader, tr.normalize, tr.task.evaluator(), tr.device, tr.amp, self.bad)
        tr.model.train()  # evaluate leaves the net in eval mode; training goes on
        self.log.bad_images(list(self.bad.bad))
        self.show(report)


def run_updates(
    job: RunJob, trainer: Trainer, feed: Feed, bad: ListBadImages, n: int, start: int, log: DarknetLog,
    progress: Callable[[TrainState], None], schedule: EvalSchedule, writer: BackupWriter,
) -> None:
    """The engine's loop over the updates from ``start`` (the header's ``seen``) to ``max_batches``: one
    ``train_step`` per micro-batch, an update every ``subdivisions``; after each, darknet's hook: the
    header's ``seen``, the bad images met, the command's ``progress`` lines, the evaluation, the backups.
    ``n`` is the number of training images (an epoch)."""
    header, step = job.model.header, job.t.images_per_update

    def after_update(state: TrainState, losses: dict[str, float]) -> None:
        # state.step counts the updates from `start`: it is darknet's batch number
        header.seen += step
        state.epoch = header.seen // n  # darknet's epoch, for the engine's messages
        log.bad_images(list(bad.bad))
        bad.check()
        progress(state)
        schedule.after_update(state.step)
        writer.after_update(state.step)
        log.mark()

    log.mark()
    train_one_epoch(trainer, feed, TrainState(step=start, epoch=header.seen // n), bad, after_update)
