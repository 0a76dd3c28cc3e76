"""``cnnlab predict`` for a ``--task detect`` run: each image's boxes, as darknet's ``detector test``
finds them (the cfg's letterbox or stretch, thresh .25, the head's NMS at .45), printed in
AlexeyAB's ``-ext_output`` layout or as JSON / CSV rows."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.darknet.box_augment import BoxAugment, eval_transform
from cnnlab.darknet.detect import Detections, network_boxes, nms_sort
from cnnlab.darknet.detector_task import darknet_net
from cnnlab.darknet.programs import alexeyab_box_lines

THRESH = 0.25  # darknet detector test's -thresh default
NMS = 0.45


@dataclass
class Box:
    label: str
    index: int
    probability: float
    left: float  # pixels of the original image
    top: float
    right: float
    bottom: float


@dataclass
class BoxPrediction:
    path: str
    seconds: float  # network time, as darknet reports it
    boxes: list[Box]
    lines: list[str]  # AlexeyAB's printout of the boxes

    def text(self) -> str:
        """AlexeyAB's ``detector test -ext_output`` printout: the time, then per box and class above
        the threshold ``label: NN%`` and the box in pixels (boxes from the left edge, best class first)."""
        return "\n".join([f"{self.path}: Predicted in {self.seconds * 1000:f} milli-seconds.", *self.lines])

    def to_json(self) -> dict:
        boxes = [{"label": b.label, "index": b.index, "probability": b.probability, "box": [b.left, b.top, b.right, b.bottom]} for b in self.boxes]
        return {"path": self.path, "seconds": self.seconds, "boxes": boxes}

    def csv_rows(self) -> list[list]:
        return [[self.path, b.label, b.index, f"{b.probability:.6f}", *(f"{v:.1f}" for v in (b.left, b.top, b.right, b.bottom))] for b in self.boxes]


def boxes_of(d: Detections, names: list[str], im_w: int, im_h: int, thresh: float) -> list[Box]:
    """One :class:`Box` per (detection, class) with probability above ``thresh``, in darknet's order,
    clipped to the image."""
    out = []
    for k in range(len(d)):
        x, y, w, h = (float(v) for v in d.boxes[k])
        left, right = max(0.0, (x - w / 2) * im_w), min(float(im_w), (x + w / 2) * im_w)
        top, bottom = max(0.0, (y - h / 2) * im_h), min(float(im_h), (y + h / 2) * im_h)
        for c in np.flatnonzero(d.probs[k] > np.float32(thresh)):  # float32, as darknet compares
            out.append(Box(names[c], int(c), float(d.probs[k, c]), left, top, right, bottom))
    return out


class BoxPredictor:
    """Images → :class:`BoxPrediction`; ``load`` decodes (it can run ahead of the network)."""

    csv_header = ["path", "label", "index", "probability", "xmin", "ymin", "xmax", "ymax"]

    def __init__(self, model: nn.Module, names: list[str], device: torch.device, thresh: float = THRESH) -> None:
        self.model, self.names, self.device, self.thresh = model, names, device, thresh
        self.net = darknet_net(model)  # for decoding: the heads' anchors, masks, input size
        self.letter_box = BoxAugment.from_net(self.net, self.net.flavor).letter_box  # as the run validated
        last = self.net.layers[self.net.detection_layers[-1]]
        self.nms_kind = getattr(last, "nms_kind", "default")

    def load(self, path: str, data: bytes | None = None) -> tuple[torch.Tensor, int, int]:
        """The network input of an image and the image's width and height (raises BadImage)."""
        from cnnlab.data.images import decode_image

        image = decode_image(Path(path) if data is None else data)
        return eval_transform(image, self.net.width, self.net.height, self.letter_box), image.shape[2], image.shape[1]

    @torch.no_grad()
    def __call__(self, path: str, top: int = 0, data: bytes | None = None) -> BoxPrediction:
        return self.from_image(path, self.load(path, data), top)

    @torch.no_grad()
    def from_image(self, path: str, loaded: tuple[torch.Tensor, int, int], top: int = 0) -> BoxPrediction:
        """``top`` is the classifier's option; a detector prints every box above the threshold."""
        x, im_w, im_h = loaded
        t0 = time.perf_counter()
        outputs = self.model(x.unsqueeze(0).to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        d = nms_sort(network_boxes(self.net, outputs, im_w, im_h, self.thresh, self.letter_box), NMS, self.nms_kind)
        lines = alexeyab_box_lines(d, self.thresh, self.names, im_w, im_h, ext=True)
        return BoxPrediction(path, seconds, boxes_of(d, self.names, im_w, im_h, self.thresh), lines)
