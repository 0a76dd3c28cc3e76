"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document
recognition").

``lenet5`` is the common modern form: full C3 connections, ReLU and max-pooling, 61,706 parameters
for 10 classes. The paper-exact variant (sparse C3, scaled tanh, trainable subsampling, RBF output)
lives beside it as ``lenet5_paper``.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models import register_model
from cnnlab.models._base import Classifier, ModelMeta, Preprocess

PAPER = "LeCun et al. 1998, Gradient-based learning applied to document recognition"
# MNIST statistics; 28×28 digits are centred in the 32×32 field by the zero-padding center crop.
MNIST_PREPROCESS = Preprocess(input_size=(1, 32, 32), mean=(0.1307,), std=(0.3081,), resize=28)


class LeNet5(Classifier):
    def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5),  # C1: (B, 6, 28, 28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # S2: (B, 6, 14, 14)
            nn.Conv2d(6, 16, 5),  # C3: (B, 16, 10, 10)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # S4: (B, 16, 5, 5)
        )
        self.c5 = nn.Linear(16 * 5 * 5, 120)
        self.f6 = nn.Linear(120, 84)
        self.fc = nn.Linear(84, num_classes)
        self.meta = ModelMeta(
            name="lenet5",
            preprocess=MNIST_PREPROCESS.with_channels(in_chans),
            first_conv="features.0",
            classifier="fc",
            paper=PAPER,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.relu(self.c5(x.flatten(1)))
        x = torch.relu(self.f6(x))
        return x if pre_logits else self.fc(x)


@register_model()
def lenet5(num_classes: int = 10, in_chans: int = 1) -> LeNet5:
    return LeNet5(num_classes, in_chans)
