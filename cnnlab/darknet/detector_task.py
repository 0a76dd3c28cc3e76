"""Darknet detector training as an engine :class:`~cnnlab.engine.task.Task`, and its mAP evaluation.

The loss is darknet's: each [yolo]/[region] layer's deltas (:mod:`cnnlab.darknet.yolo_loss`), summed
over the images and divided by the images of one update, as darknet's SGD step divides the summed
gradient by ``batch × subdivisions``. The evaluation is AlexeyAB's ``-map``: the detections
``validate_detector_map`` makes (threshold .005, NMS .45) matched to the ``valid=`` boxes
(:mod:`cnnlab.darknet.map`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from cnnlab.darknet.detect import network_boxes, nms_sort
from cnnlab.darknet.map import MapAccumulator, MapResult
from cnnlab.darknet.model import DarknetNet, load_darknet
from cnnlab.data.loader import Batch
from cnnlab.engine.task import Evaluator, Report, Task
from cnnlab.errors import CnnlabError

MAP_THRESH = 0.005  # validate_detector_map's box threshold
MAP_NMS = 0.45


def darknet_net(model: nn.Module) -> DarknetNet:
    """The :class:`DarknetNet` inside a model: itself, a DDP wrapper's module, or a DarknetDetector's net."""
    m = getattr(model, "module", model)
    m = getattr(m, "_orig_mod", m)  # torch.compile
    if hasattr(m, "options") and hasattr(m, "inner"):  # an InferenceModel: decode with its torch network
        if m.inner is None:
            raise CnnlabError(f"detection decoding reads the network's [yolo]/[region] layers: use --backend torch, not {m.options.backend}")
        m = m.inner
    return getattr(m, "net", m)


def batch_boxes(batch: Batch, device: torch.device, no_boxes: str) -> torch.Tensor:
    """The batch's (B, M, 5) boxes on ``device``; the error ``no_boxes`` when the data gave class labels."""
    if batch.boxes is None:
        raise CnnlabError(no_boxes)
    return batch.boxes.to(device, non_blocking=True)


def heads_loss(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, seen: int | None = None) -> tuple[torch.Tensor, list]:
    """darknet's loss of the [yolo]/[region] heads on one micro-batch (:func:`cnnlab.darknet.yolo_loss.detection_loss`:
    the value of darknet's cost, the gradient of its summed deltas) and the layers' deltas and counters."""
    from cnnlab.darknet.yolo_loss import detection_loss

    net = darknet_net(model)
    heads = [net.layers[i] for i in net.detection_layers]
    outputs = [o.float() for o in model(images)]
    return detection_loss(heads, outputs, targets, images.shape[-1], images.shape[-2], seen=seen)


class DarknetDetect(Task):
    """``cnnlab darknet detector train``: boxes per image, darknet's deltas, mAP on valid=."""

    name = "darknet-detect"
    nonfinite_advice = "lower learning_rate= or add burn_in= in [net], and check the labels for empty boxes"

    def __init__(self, classes: list[str], device: torch.device, batch: int, subdivisions: int, evaluation: "MapSettings") -> None:
        super().__init__(classes, device)
        self.images_per_update = batch * subdivisions
        # the engine divides each micro-batch's term by accum_steps; see DarknetClassify for why this cancels exactly
        self.engine_scale = torch.tensor(1.0) / subdivisions
        self.evaluation = evaluation
        self.last_layers: list = []  # the per-layer statistics of the last micro-batch (for the printout)
        self.seen = 0  # images trained on so far ([region] matches anchor priors for the first 12800)

    @staticmethod
    def build_model(model: str, model_kwargs: dict) -> DarknetNet:
        return load_darknet(model, None, model_kwargs.get("flavor", "alexeyab"))

    @staticmethod
    def check_model(model: nn.Module) -> None:
        if not getattr(model, "is_detector", False):
            raise CnnlabError(f"{model.source} has no [yolo] or [region] layer: it is a classifier; train it with `cnnlab darknet classifier train`")

    def targets(self, batch: Batch) -> torch.Tensor:
        return batch_boxes(batch, self.device, "detection training needs boxes, but the data gave class labels; give a detection .data / source")

    def losses(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> tuple[dict[str, torch.Tensor], float]:
        loss, layers = heads_loss(model, images, targets, seen=self.seen + images.shape[0])
        self.last_layers = layers
        # gradient: darknet's summed deltas over the images of one update; value: darknet's loss per image
        term = (loss - loss.detach()) / self.images_per_update / self.engine_scale + loss.detach()
        return {"yolo": term}, float(loss.detach()) * images.shape[0]

    def tally(self, outputs: float, targets: torch.Tensor) -> dict[str, float]:
        """The micro-batch's loss summed over its images: darknet prints an update's mean."""
        return {"cost": outputs}

    def evaluator(self) -> "MapEvaluator":
        return MapEvaluator(len(self.classes), self.evaluation)


class MapSettings:
    """How ``-map`` measures: IoU threshold, confidence threshold for P/R/F1, interpolation, letterbox,
    and each valid image's original size (needed only to undo a letterbox)."""

    def __init__(self, iou_thresh: float = 0.5, thresh: float = 0.25, points: int = 0, letter: bool = False,
                 size_of: Callable[[int], tuple[int, int]] | None = None) -> None:
        self.iou_thresh, self.thresh, self.points, self.letter, self.size_of = iou_thresh, thresh, points, letter, size_of


class MapEvaluator(Evaluator):
    def __init__(self, classes: int, s: MapSettings, names: list[str] | None = None) -> None:
        self.s, self.names = s, names
        self.acc = MapAccumulator(classes, s.iou_thresh, s.thresh, s.points)
        self.count = 0

    @torch.no_grad()
    def update(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> None:
        net = darknet_net(model)
        outputs = model(images)
        kind = getattr(net.layers[net.detection_layers[-1]], "nms_kind", "default")
        for k in range(images.shape[0]):
            im_w, im_h = self.s.size_of(int(batch.indices[k])) if self.s.size_of else (net.width, net.height)
            d = network_boxes(net, [o[k : k + 1] for o in outputs], im_w, im_h, MAP_THRESH, self.s.letter)
            d = nms_sort(d, MAP_NMS, kind)
            truth = batch.boxes[k].numpy()
            self.acc.add(d, truth[truth[:, 0] >= 0])
        self.count += images.shape[0]

    def compute(self) -> "MapReport":
        from cnnlab.engine import distributed

        accs = distributed.gather_objects(self.acc)
        for other in accs[1:]:
            accs[0].merge(other)
        return MapReport(accs[0].compute(), sum(distributed.gather_objects(self.count)), self.names)


class MapReport(Report):
    """AlexeyAB's ``-map`` printout; mAP picks ``_best.weights``."""

    def __init__(self, result: MapResult, count: int, names: list[str] | None = None) -> None:
        self.result, self.count, self.names = result, count, names

    @property
    def primary(self) -> float:
        return float(self.result.map)

    def record(self) -> dict[str, float]:
        r = self.result
        return {"val_map": float(r.map), "val_precision": float(r.precision), "val_recall": float(r.recall), "val_f1": float(r.f1), "val_avg_iou": float(r.avg_iou)}

    def line(self) -> str:
        return f"mAP@{self.result.iou_thresh:.2f} {self.primary:.4f}"

    def headline(self) -> str:
        return f"mAP@{self.result.iou_thresh:.2f} {100 * self.primary:.2f}%"

    def table(self) -> str:
        return self.result.lines(self.names or [str(i) for i in range(len(self.result.ap))])

    def to_dict(self) -> dict:
        r = self.result
        return self.record() | {"count": self.count, "ap": [float(a) for a in np.asarray(r.ap)]}

    def summary(self) -> dict[str, float]:
        return self.record()
