"""ResNet (He, Zhang, Ren, Sun 2015, "Deep residual learning for image recognition").

ImageNet variants ``resnet18/34/50/101/152`` use torchvision's module names, so a torchvision
``state_dict`` loads strictly. ``shortcut`` selects the paper's option: "A" zero-pads the identity
when the shape changes, "B" projects only then (the default, and torchvision's), "C" projects every
shortcut. The CIFAR family ``resnet20/32/44/56/110`` (section 4.2) uses option A and 16-32-64
filters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models import register_model
from cnnlab.models._base import IMAGENET_MEAN, IMAGENET_STD, Classifier, ModelMeta, Preprocess

PAPER = "He et al. 2015, Deep residual learning for image recognition"
IMAGENET_PREPROCESS = Preprocess(input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256)
CIFAR_PREPROCESS = Preprocess(
    input_size=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), resize=32
)


class ZeroPadShortcut(nn.Module):
    """Option A: subsample spatially and append zero channels; no parameters."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def make_shortcut(option: str, in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    """The shortcut of one block, or ``None`` for a plain identity."""
    changes_shape = stride != 1 or in_ch != out_ch
    if option == "A" and changes_shape:
        return ZeroPadShortcut(stride, out_ch - in_ch)
    if (option == "B" and changes_shape) or option == "C":
        return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
    if option not in ("A", "B", "C"):
        raise ValueError(f"shortcut must be 'A', 'B' or 'C', not {option!r}")
    return None


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = make_shortcut(shortcut, in_ch, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, shortcut: str) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        # Stride on the 3×3 conv ("ResNet v1.5", as torchvision and most trained weights do).
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(Classifier):
    """ImageNet ResNet: 7×7/2 stem, 3×3/2 max-pool, four stages, global average pool, fc."""

    def __init__(
        self,
        block: Block,
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        shortcut: str = "B",
        name: str = "resnet",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage, in_ch = _stage(block, in_ch, width, blocks, 1 if i == 0 else 2, shortcut)
            setattr(self, f"layer{i + 1}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        _init_weights(self)
        self.meta = ModelMeta(
            name=name,
            preprocess=IMAGENET_PREPROCESS.with_channels(in_chans),
            first_conv="conv1",
            classifier="fc",
            paper=PAPER,
            extra={"shortcut": shortcut},
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, C, H/32, W/32)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x).flatten(1)
        return x if pre_logits else self.fc(x)


class CifarResNet(Classifier):
    """CIFAR ResNet-(6n+2): 3×3 stem, three stages of n blocks at 16/32/64 filters."""

    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3, shortcut: str = "A") -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, not {depth}")
        n = (depth - 2) // 6
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        in_ch = 16
        for i, width in enumerate((16, 32, 64)):
            stage, in_ch = _stage(BasicBlock, in_ch, width, n, 1 if i == 0 else 2, shortcut)
            setattr(self, f"layer{i + 1}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        _init_weights(self)
        self.meta = ModelMeta(
            name=f"resnet{depth}",
            preprocess=CIFAR_PREPROCESS.with_channels(in_chans),
            first_conv="conv1",
            classifier="fc",
            paper=PAPER + " (section 4.2, CIFAR-10)",
            extra={"shortcut": shortcut},
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16, H, W)
        return self.layer3(self.layer2(self.layer1(x)))  # (B, 64, H/4, W/4)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x).flatten(1)
        return x if pre_logits else self.fc(x)


def _stage(block: Block, in_ch: int, width: int, blocks: int, stride: int, shortcut: str) -> tuple[nn.Sequential, int]:
    layers = []
    for i in range(blocks):
        layers.append(block(in_ch, width, stride if i == 0 else 1, shortcut))
        in_ch = width * block.expansion
    return nn.Sequential(*layers), in_ch


def _init_weights(model: nn.Module) -> None:
    # He (fan_out) init for convs, BN scale 1 / shift 0, as in the paper and torchvision.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _imagenet(name: str, block: Block, layers: list[int]) -> Callable[..., ResNet]:
    def build(num_classes: int = 1000, in_chans: int = 3, shortcut: str = "B") -> ResNet:
        return ResNet(block, layers, num_classes, in_chans, shortcut, name)

    build.__name__ = name
    return build


def _cifar(depth: int) -> Callable[..., CifarResNet]:
    def build(num_classes: int = 10, in_chans: int = 3, shortcut: str = "A") -> CifarResNet:
        return CifarResNet(depth, num_classes, in_chans, shortcut)

    build.__name__ = f"resnet{depth}"
    return build


for _name, _block, _layers in (
    ("resnet18", BasicBlock, [2, 2, 2, 2]),
    ("resnet34", BasicBlock, [3, 4, 6, 3]),
    ("resnet50", Bottleneck, [3, 4, 6, 3]),
    ("resnet101", Bottleneck, [3, 4, 23, 3]),
    ("resnet152", Bottleneck, [3, 8, 36, 3]),
):
    register_model(_name)(_imagenet(_name, _block, _layers))

for _depth in (20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}")(_cifar(_depth))
