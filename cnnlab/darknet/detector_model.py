"""A darknet detector cfg as a cnnlab model, so ``cnnlab train --task detect --model darknet:CFG`` takes it.

:class:`DarknetDetector` wraps the :class:`~cnnlab.darknet.model.DarknetNet` as
:class:`~cnnlab.darknet.classifier.DarknetClassifier` wraps a classifier: ``meta`` names it
``darknet:PATH`` and carries the cfg *text*, so a checkpoint rebuilds the network without the file.
``forward`` returns the [yolo]/[region] layers' outputs, one tensor per head.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.darknet.classifier import darknet_meta
from cnnlab.darknet.model import DarknetNet
from cnnlab.errors import CnnlabError
from cnnlab.model_meta import Preprocess


class DarknetDetector(nn.Module):
    def __init__(self, cfg_text: str, flavor: str = "alexeyab", source: str = "<cfg>") -> None:
        super().__init__()
        net = DarknetNet(cfg_text, flavor, source)
        if not net.is_detector:
            raise CnnlabError(f"{source} has no [yolo] or [region] layer: it is a classifier; train it with --task classify")
        self.net = net
        self.num_classes = net.classes
        c = net.channels
        # Images reach the network already at its size (the detection loaders resize them with their
        # boxes); the engine only scales pixels to [0, 1], as darknet.
        pre = Preprocess(input_size=(c, net.height, net.width), mean=(0.0,) * c, std=(1.0,) * c, resize=net.width)
        self.meta = darknet_meta(net, source, flavor, pre, net.detection_layers[-1] - 1)

    @property
    def is_detector(self) -> bool:
        return True

    @property
    def source(self) -> str:
        return self.net.source

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)

    def layer_table(self) -> str:
        return self.net.layer_table()
