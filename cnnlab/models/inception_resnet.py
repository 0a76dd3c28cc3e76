"""Inception-ResNet-v1 and -v2 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the impact
of residual connections on learning").

``inception_resnet_v1`` is the paper's Figures 14, 10, 7, 11, 12, 13 (no public reference weights).
``inception_resnet_v2`` follows the released TensorFlow checkpoint as timm ships it — module names
included, so timm's ``state_dict`` loads strictly. That checkpoint differs from the paper's
Figure 16/17/18/19 widths and uses a plain stem rather than Figure 3's; see docs/models.md.
Each residual branch ends in a linear 1×1 convolution whose output is scaled (0.1–0.2) before the
sum, the paper's section 3.3 remedy for unstable training.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from cnnlab.models import register_model
from cnnlab.models._base import Classifier, ModelMeta
from cnnlab.models.inception import PREPROCESS, V4_PAPER, _avg_proj, _init_truncnormal
from cnnlab.models.layers import ConvBN

# timm's inception_resnet_v2 recipe crops 0.8975 of the resized image: 299 / 0.8975 ≈ 333.
V2_PREPROCESS = replace(PREPROCESS, resize=333)


def _cat(*xs: torch.Tensor) -> torch.Tensor:
    return torch.cat(xs, 1)


class Residual(nn.Module):
    """``relu(x + scale · conv2d(concat(branches(x))))``; subclasses set the branches."""

    def __init__(self, branch_out: int, channels: int, scale: float, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.conv2d = nn.Conv2d(branch_out, channels, 1)  # linear: no BN, no activation
        self.act = nn.ReLU() if relu else nn.Identity()

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.scale * self.conv2d(_cat(*self.branches(x))))


# ---------------------------------------------------------------- v2 blocks (timm's names)


class Mixed5b(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = ConvBN(192, 96, 1)
        self.branch1 = nn.Sequential(ConvBN(192, 48, 1), ConvBN(48, 64, 5, padding=2))
        self.branch2 = nn.Sequential(ConvBN(192, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1))
        self.branch3 = _avg_proj(192, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x))  # (B, 320, 35, 35)


class Block35(Residual):
    def __init__(self, scale: float) -> None:
        super().__init__(128, 320, scale)
        self.branch0 = ConvBN(320, 32, 1)
        self.branch1 = nn.Sequential(ConvBN(320, 32, 1), ConvBN(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(ConvBN(320, 32, 1), ConvBN(32, 48, 3, padding=1), ConvBN(48, 64, 3, padding=1))

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.branch0(x), self.branch1(x), self.branch2(x)]


class Mixed6a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = ConvBN(320, 384, 3, 2)
        self.branch1 = nn.Sequential(ConvBN(320, 256, 1), ConvBN(256, 256, 3, padding=1), ConvBN(256, 384, 3, 2))
        self.branch2 = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branch0(x), self.branch1(x), self.branch2(x))  # (B, 1088, 17, 17)


class Block17(Residual):
    def __init__(self, scale: float) -> None:
        super().__init__(384, 1088, scale)
        self.branch0 = ConvBN(1088, 192, 1)
        self.branch1 = nn.Sequential(
            ConvBN(1088, 128, 1), ConvBN(128, 160, (1, 7), padding=(0, 3)), ConvBN(160, 192, (7, 1), padding=(3, 0))
        )

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.branch0(x), self.branch1(x)]


class Mixed7a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(ConvBN(1088, 256, 1), ConvBN(256, 384, 3, 2))
        self.branch1 = nn.Sequential(ConvBN(1088, 256, 1), ConvBN(256, 288, 3, 2))
        self.branch2 = nn.Sequential(ConvBN(1088, 256, 1), ConvBN(256, 288, 3, padding=1), ConvBN(288, 320, 3, 2))
        self.branch3 = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x))  # (B, 2080, 8, 8)


class Block8(Residual):
    def __init__(self, scale: float = 1.0, relu: bool = True) -> None:
        super().__init__(448, 2080, scale, relu)
        self.branch0 = ConvBN(2080, 192, 1)
        self.branch1 = nn.Sequential(
            ConvBN(2080, 192, 1), ConvBN(192, 224, (1, 3), padding=(0, 1)), ConvBN(224, 256, (3, 1), padding=(1, 0))
        )

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.branch0(x), self.branch1(x)]


class InceptionResNetV2(Classifier):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv2d_1a = ConvBN(in_chans, 32, 3, 2)  # (B, 32, 149, 149)
        self.conv2d_2a = ConvBN(32, 32, 3)
        self.conv2d_2b = ConvBN(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, 2)  # (B, 64, 73, 73)
        self.conv2d_3b = ConvBN(64, 80, 1)
        self.conv2d_4a = ConvBN(80, 192, 3)
        self.maxpool_5a = nn.MaxPool2d(3, 2)  # (B, 192, 35, 35)
        self.mixed_5b = Mixed5b()
        self.repeat = nn.Sequential(*[Block35(0.17) for _ in range(10)])
        self.mixed_6a = Mixed6a()
        self.repeat_1 = nn.Sequential(*[Block17(0.10) for _ in range(20)])
        self.mixed_7a = Mixed7a()
        self.repeat_2 = nn.Sequential(*[Block8(0.20) for _ in range(9)])
        self.block8 = Block8(relu=False)
        self.conv2d_7b = ConvBN(2080, 1536, 1)  # (B, 1536, 8, 8)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(dropout)  # keep probability 0.8, as the paper
        self.classif = nn.Linear(1536, num_classes)
        _init_truncnormal(self)
        self.meta = ModelMeta(
            name="inception_resnet_v2",
            preprocess=V2_PREPROCESS.with_channels(in_chans),
            first_conv="conv2d_1a.conv",
            classifier="classif",
            paper=V4_PAPER,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
        x = self.maxpool_5a(self.conv2d_4a(self.conv2d_3b(self.maxpool_3a(x))))
        x = self.repeat(self.mixed_5b(x))  # (B, 320, 35, 35)
        x = self.repeat_1(self.mixed_6a(x))  # (B, 1088, 17, 17)
        x = self.block8(self.repeat_2(self.mixed_7a(x)))  # (B, 2080, 8, 8)
        return self.conv2d_7b(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x).flatten(1))
        return x if pre_logits else self.classif(x)


# ---------------------------------------------------------------- v1 (the paper's figures)


class V1BlockA(Residual):
    """Figure 10 (35×35×256)."""

    def __init__(self, scale: float) -> None:
        super().__init__(96, 256, scale)
        self.branch0 = ConvBN(256, 32, 1)
        self.branch1 = nn.Sequential(ConvBN(256, 32, 1), ConvBN(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(ConvBN(256, 32, 1), ConvBN(32, 32, 3, padding=1), ConvBN(32, 32, 3, padding=1))

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.branch0(x), self.branch1(x), self.branch2(x)]


class V1ReductionA(nn.Module):
    """Figure 7 with k=192, l=192, m=256, n=384 (Table 1, Inception-ResNet-v1)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = ConvBN(256, 384, 3, 2)
        self.branch1 = nn.Sequential(ConvBN(256, 192, 1), ConvBN(192, 192, 3, padding=1), ConvBN(192, 256, 3, 2))
        self.branch2 = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branch0(x), self.branch1(x), self.branch2(x))  # (B, 896, 17, 17)


class V1BlockB(Residual):
    """Figure 11 (17×17×896)."""

    def __init__(self, scale: float) -> None:
        super().__init__(256, 896, scale)
        self.branch0 = ConvBN(896, 128, 1)
        self.branch1 = nn.Sequential(
            ConvBN(896, 128, 1), ConvBN(128, 128, (1, 7), padding=(0, 3)), ConvBN(128, 128, (7, 1), padding=(3, 0))
        )

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.branch0(x), self.branch1(x)]


class V1ReductionB(nn.Module):
    """Figure 12."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(ConvBN(896, 256, 1), ConvBN(256, 384, 3, 2))
        self.branch1 = nn.Sequential(ConvBN(896, 256, 1), ConvBN(256, 256, 3, 2))
        self.branch2 = nn.Sequential(ConvBN(896, 256, 1), ConvBN(256, 256, 3, padding=1), ConvBN(256, 256, 3, 2))
        self.branch3 = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x))  # (B, 1792, 8, 8)


class V1BlockC(Residual):
    """Figure 13 (8×8×1792)."""

    def __init__(self, scale: float = 1.0, relu: bool = True) -> None:
        super().__init__(384, 1792, scale, relu)
        self.branch0 = ConvBN(1792, 192, 1)
        self.branch1 = nn.Sequential(
            ConvBN(1792, 192, 1), ConvBN(192, 192, (1, 3), padding=(0, 1)), ConvBN(192, 192, (3, 1), padding=(1, 0))
        )

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.branch0(x), self.branch1(x)]


class InceptionResNetV1(Classifier):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(  # Figure 14
            ConvBN(in_chans, 32, 3, 2),  # (B, 32, 149, 149)
            ConvBN(32, 32, 3),
            ConvBN(32, 64, 3, padding=1),
            nn.MaxPool2d(3, 2),  # (B, 64, 73, 73)
            ConvBN(64, 80, 1),
            ConvBN(80, 192, 3),
            ConvBN(192, 256, 3, 2),  # (B, 256, 35, 35)
        )
        self.blocks = nn.Sequential(
            *[V1BlockA(0.17) for _ in range(5)],
            V1ReductionA(),
            *[V1BlockB(0.10) for _ in range(10)],
            V1ReductionB(),
            *[V1BlockC(0.20) for _ in range(5)],  # (B, 1792, 8, 8)
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(dropout)
        self.classif = nn.Linear(1792, num_classes)
        _init_truncnormal(self)
        self.meta = ModelMeta(
            name="inception_resnet_v1",
            preprocess=PREPROCESS.with_channels(in_chans),
            first_conv="stem.0.conv",
            classifier="classif",
            paper=V4_PAPER,
            extra={"stage_parents": ["stem", "blocks"]},  # stem convs, then each block
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x).flatten(1))
        return x if pre_logits else self.classif(x)


@register_model()
def inception_resnet_v1(num_classes: int = 1000, in_chans: int = 3) -> InceptionResNetV1:
    return InceptionResNetV1(num_classes, in_chans)


@register_model()
def inception_resnet_v2(num_classes: int = 1000, in_chans: int = 3) -> InceptionResNetV2:
    return InceptionResNetV2(num_classes, in_chans)
