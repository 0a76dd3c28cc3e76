"""Detection: boxes per image, the loss of darknet's [yolo]/[region] heads, evaluated by mAP.

``cnnlab train --task detect --model darknet:CFG --data FILE.data`` trains the same network as
``cnnlab darknet detector train`` through the engine's own front door: its run folder, checkpoints
(exact resume), logger, any number of processes and the per-epoch mAP. What differs from the darknet
command is only what the engine owns: the optimizer and schedule come from ``--opt``/``--lr``/
``--sched`` (not the cfg's [net]), the loss is averaged over the images of a micro-batch, and
checkpoints are cnnlab's (``cnnlab darknet`` programs read ``.weights``; convert with the model's
``save_weights``).

The loaders are the task's (:meth:`Detection.loaders`): images and boxes go through darknet's
detection augmentation (``jitter``, flip, HSV, letterbox as the cfg says), seeded per
``(epoch, index)`` so a resumed run sees the same samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.darknet.box_augment import BoxAugment, eval_transform
from cnnlab.darknet.detector_task import MapEvaluator, MapSettings, batch_boxes, darknet_net, heads_loss
from cnnlab.data.loader import Batch, PerImageDataset, ResumableSampler, batch_loader, sample_seed
from cnnlab.data.sources.base import BadImage
from cnnlab.engine.task import TASK_DEFAULTS, TASKS, Task
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.models.layers import unwrap


class Detection(Task):
    name = "detect"
    checkpoint_key = "task"
    nonfinite_advice = "lower --lr or add --warmup-epochs, and check the labels for empty boxes"

    def __init__(self, classes: list[str], device: torch.device) -> None:
        super().__init__(classes, device)

    def build_model(self, model: str, model_kwargs: dict) -> nn.Module:
        if not model.startswith("darknet:"):
            raise CnnlabError(f"--task detect trains darknet detector cfgs: write --model darknet:PATH.cfg (not {model})")
        return create_model(model, num_classes=len(self.classes), **{"flavor": "alexeyab", **model_kwargs})

    def check_model(self, model: nn.Module) -> None:
        if not getattr(unwrap(model), "is_detector", False):
            source = getattr(model, "source", getattr(getattr(model, "meta", None), "name", type(model).__name__))
            raise CnnlabError(f"{source} is not a detector (no [yolo]/[region] layer); train it with --task classify")

    def targets(self, batch: Batch) -> torch.Tensor:
        return batch_boxes(batch, self.device, "--task detect needs boxes, but the data gave class labels; give a detection .data file")

    def losses(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> tuple[dict[str, torch.Tensor], float]:
        loss, _ = heads_loss(model, images, targets)
        # gradient: darknet's deltas averaged over the micro-batch's images; value: darknet's loss per image
        return {"yolo": (loss - loss.detach()) / images.shape[0] + loss.detach()}, float(loss.detach()) * images.shape[0]

    def tally(self, outputs: float, targets: torch.Tensor) -> dict[str, float]:
        return {"cost": outputs}

    def train_record(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        return {"train_cost": sums.get("cost", 0.0) / max(1, seen)}

    def train_line(self, record: dict[str, float]) -> str:
        return f"cost/image {record['train_cost']:.3f}"

    def evaluator(self) -> MapEvaluator:
        # validation boxes are given in the network input's frame (see BoxSamples): IoU, and so mAP,
        # is the same there as in the image's own frame
        return MapEvaluator(len(self.classes), MapSettings(), self.classes)

    def open_data(self, spec: str, split: str) -> Any:
        from cnnlab.data.detection_sets import open_detection_split

        return open_detection_split(spec, split, classes=self.classes)  # a VOC folder's classes numbered as the run's

    def evaluation(self, source: Any) -> tuple:
        """``cnnlab valid``: mAP@0.5 over the set's boxes, as the run's per-epoch validation measures it."""
        if not hasattr(source, "boxes"):
            raise CnnlabError("this is a detection run: give --data a detection set (a darknet .data file, a VOC folder or shards with boxes)")
        if len(source.classes) != len(self.classes):
            raise CnnlabError(f"the data has {len(source.classes)} classes and the run {len(self.classes)} ({', '.join(self.classes)}): "
                              "give the set the run was trained on")  # fmt: skip
        return source, self.evaluator()

    def eval_loader(self, source: Any, model: nn.Module, batch_size: int, workers: int, pin: bool) -> Any:
        net = darknet_net(model)
        letter = BoxAugment.from_net(net, net.flavor).letter_box
        samples = BoxSamples(source, net.width, net.height, 0, None, letter)
        return batch_loader(samples, ResumableSampler(len(source), 0, False), batch_size, workers, False, pin, 0)

    def predictor(self, model: nn.Module, pre: Any, device: torch.device, ckpt: dict, where: str) -> Any:
        from cnnlab.tasks.detection_predict import BoxPredictor

        return BoxPredictor(model, self.classes, device)

    def loaders(self, cfg: Any, data: Any, model: nn.Module, rank: int, world: int, pin: bool) -> tuple:
        """``(train, val)`` loaders of images at the network's size with their boxes."""
        net = darknet_net(model)
        augment = BoxAugment.from_net(net, net.flavor)
        train = BoxSamples(data.train, net.width, net.height, cfg.seed, augment, augment.letter_box)
        val = BoxSamples(data.val, net.width, net.height, cfg.seed, None, augment.letter_box)
        return (
            batch_loader(train, ResumableSampler(len(data.train), cfg.seed, True, rank, world, drop_last=True), cfg.batch_size,
                         cfg.workers, True, pin, cfg.seed),
            batch_loader(val, ResumableSampler(len(data.val), cfg.seed, False, rank, world), cfg.batch_size, cfg.workers, False, pin, cfg.seed),
        )  # fmt: skip


class BoxSamples(PerImageDataset):
    """``(epoch, index)`` → (uint8 image at width × height, its (N, 5) boxes, index); augmented when
    ``augment`` is given, seeded by the sample; (None, reason, index) for a bad image or label file."""

    def __init__(self, source: Any, width: int, height: int, seed: int, augment: BoxAugment | None, letter_box: bool) -> None:
        self.source, self.width, self.height, self.seed, self.augment = source, width, height, seed, augment
        self.letter_box = letter_box  # validation images: letterboxed as the cfg trains them, or stretched

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        try:
            image, boxes = self.source.load(index), self.source.boxes(index)
        except BadImage as e:
            return None, f"{self.source.describe(index)}: {e}", index
        if self.augment is None:
            x = eval_transform(image, self.width, self.height, self.letter_box)
            if self.letter_box:
                boxes = letterboxed(boxes, image.shape[2], image.shape[1], self.width, self.height)
        else:
            rng = np.random.default_rng(sample_seed(self.seed, epoch, index))
            x, boxes = self.augment(image, boxes, rng, self.width, self.height)
        return (x * 255).round_().clamp_(0, 255).to(torch.uint8), boxes, index


def letterboxed(boxes: np.ndarray, im_w: int, im_h: int, net_w: int, net_h: int) -> np.ndarray:
    """Boxes relative to an image → relative to its letterbox in the network input (darknet's
    letterbox_image geometry: the image scaled to fit, centred)."""
    if im_w * net_h > im_h * net_w:
        new_w, new_h = net_w, im_h * net_w // im_w
    else:
        new_w, new_h = im_w * net_h // im_h, net_h
    out = boxes.copy()
    out[:, 1] = (boxes[:, 1] * new_w + (net_w - new_w) // 2) / net_w
    out[:, 2] = (boxes[:, 2] * new_h + (net_h - new_h) // 2) / net_h
    out[:, 3] = boxes[:, 3] * new_w / net_w
    out[:, 4] = boxes[:, 4] * new_h / net_h
    return out


@TASK_DEFAULTS.register("detect")
def _defaults(model: str) -> tuple[dict, str]:
    """darknet's training settings from the cfg's [net]: its learning rate (the loss sums over boxes,
    so the classifiers' 0.1 diverges in a few steps), momentum, decay and batch, and a warm-up where it
    has ``burn_in``. The schedule stays the engine's (--sched)."""
    if not model.startswith("darknet:"):
        return {}, ""
    from cnnlab.darknet.cfg import read_cfg

    try:
        sections, _ = read_cfg(model[len("darknet:") :])
    except (CnnlabError, OSError):
        return {}, ""  # the model's own loading reports it, with the path
    net = sections[0] if sections and sections[0].type in ("net", "network") else None
    if net is None:
        return {}, ""
    values = {"lr": net.float("learning_rate", 0.001), "momentum": net.float("momentum", 0.9), "weight_decay": net.float("decay", 0.0001),
              "batch_size": max(1, net.int("batch", 1) // max(1, net.int("subdivisions", 1)))}  # fmt: skip
    if net.int("burn_in", 0) > 0:
        values["warmup_epochs"] = 2.0
    return values, f"detect: from the [net] of {model[len('darknet:') :]}"


@TASKS.register("detect")
def _build(cfg: Any, source: Any, device: torch.device) -> Detection:
    if cfg is not None and not hasattr(source, "boxes"):
        raise CnnlabError("--task detect needs a detection source (a darknet .data file with YOLO labels, or a VOC folder)")
    return Detection(list(source.classes), device)
