"""AlexNet (Krizhevsky, Sutskever, Hinton 2012, "ImageNet classification with deep convolutional
neural networks").

``alexnet`` is the paper's network: 227×227 input (the paper says 224, but 11×11/4 convolutions
give 55×55 only from 227), 96-256-384-384-256 filters, local response normalisation after conv1
and conv2, overlapping 3×3/2 max-pooling, the two-GPU split as ``groups=2`` on conv2/4/5 (conv3
sees both towers), dropout 0.5 after fc6 and fc7: 60,965,224 parameters.

``alexnet_owt`` is the single-tower "one weird trick" variant (Krizhevsky 2014) that torchvision
ships: 64-192-384-256-256 filters, no LRN, 224×224 input; its module names are torchvision's so a
torchvision ``state_dict`` loads strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models import register_model
from cnnlab.models._base import IMAGENET_MEAN, IMAGENET_STD, Classifier, ModelMeta, Preprocess

PAPER = "Krizhevsky, Sutskever, Hinton 2012, ImageNet classification with deep convolutional neural networks"
OWT_PAPER = "Krizhevsky 2014, One weird trick for parallelizing convolutional neural networks"

# Caffe's ImageNet mean pixel (RGB, 0-255 scale) on un-scaled pixels: the common AlexNet recipe.
MEAN_PIXEL = (123.68, 116.78, 103.94)
PAPER_PREPROCESS = Preprocess(
    input_size=(3, 227, 227), mean=tuple(m / 255 for m in MEAN_PIXEL), std=(1 / 255,) * 3, resize=256
)
OWT_PREPROCESS = Preprocess(input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256)


def _lrn() -> nn.LocalResponseNorm:
    # Paper: b = a / (k + α Σ a²)^β with k=2, n=5, α=1e-4, β=0.75. PyTorch (like Caffe) divides α
    # by n inside the sum, so α·n reproduces the paper's formula exactly.
    return nn.LocalResponseNorm(size=5, alpha=1e-4 * 5, beta=0.75, k=2.0)


class AlexNet(Classifier):
    """The 2012 network; ``features`` ends at pool5 (B, 256, 6, 6), ``classifier`` is fc6-fc8."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 96, 11, 4),  # conv1: (B, 96, 55, 55)
            nn.ReLU(inplace=True),
            _lrn(),
            nn.MaxPool2d(3, 2),  # (B, 96, 27, 27)
            nn.Conv2d(96, 256, 5, 1, 2, groups=2),  # conv2: (B, 256, 27, 27), each tower sees its 48 maps
            nn.ReLU(inplace=True),
            _lrn(),
            nn.MaxPool2d(3, 2),  # (B, 256, 13, 13)
            nn.Conv2d(256, 384, 3, 1, 1),  # conv3: crosses towers
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, 1, 1, groups=2),  # conv4
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, 1, 1, groups=2),  # conv5
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),  # (B, 256, 6, 6)
        )
        self.classifier = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),  # fc8
        )
        _init_paper(self)
        self.meta = ModelMeta(
            name="alexnet",
            preprocess=PAPER_PREPROCESS.with_channels(in_chans),
            first_conv="features.0",
            classifier="classifier.6",
            paper=PAPER,
            extra={"stage_parents": ["features"], "head_stages": 2},  # a stage per conv; fc6, fc7 are the head's
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 256, 6, 6)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.flatten(1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


class AlexNetOWT(Classifier):
    """torchvision's ``alexnet``: single tower, adaptive 6×6 pooling, dropout before fc6/fc7."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 64, 11, 4, 2),  # (B, 64, 55, 55)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),  # (B, 64, 27, 27)
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),  # (B, 192, 13, 13)
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),  # (B, 256, 6, 6)
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))  # lets other input sizes reach fc6
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        self.meta = ModelMeta(
            name="alexnet_owt",
            preprocess=OWT_PREPROCESS.with_channels(in_chans),
            first_conv="features.0",
            classifier="classifier.6",
            paper=OWT_PAPER,
            extra={"stage_parents": ["features"], "head_stages": 2},  # a stage per conv; fc6, fc7 are the head's
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 256, 6, 6) at 224×224

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x).flatten(1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


def _init_paper(model: nn.Module) -> None:
    # Section 5: weights ~ N(0, 0.01). Biases 1 in conv2/4/5 and the hidden fc layers (to give ReLUs
    # positive input early), 0 elsewhere.
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for m in convs + linears:
        nn.init.normal_(m.weight, 0.0, 0.01)
        nn.init.zeros_(m.bias)
    for m in (convs[1], convs[3], convs[4], linears[0], linears[1]):
        nn.init.ones_(m.bias)


@register_model()
def alexnet(num_classes: int = 1000, in_chans: int = 3) -> AlexNet:
    return AlexNet(num_classes, in_chans)


@register_model()
def alexnet_owt(num_classes: int = 1000, in_chans: int = 3) -> AlexNetOWT:
    return AlexNetOWT(num_classes, in_chans)
