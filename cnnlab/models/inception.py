"""Inception-v3 (Szegedy et al. 2015, "Rethinking the Inception architecture for computer vision")
and Inception-v4 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the impact of residual
connections on learning").

``inception_v3`` uses torchvision's module names, ``inception_v4`` timm's, so their ``state_dict``s
load strictly. Both take 299×299 inputs scaled to [-1, 1] (the TensorFlow recipe their weights were
trained with). Pool branches are modules rather than functional calls so `cnnlab summary` sees them.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models import register_model
from cnnlab.models._base import Classifier, ModelMeta, Preprocess
from cnnlab.models.layers import AuxHeads, ConvBN, trunc_normal_

V3_PAPER = "Szegedy et al. 2015, Rethinking the Inception architecture for computer vision"
V4_PAPER = "Szegedy et al. 2016, Inception-v4, Inception-ResNet and the impact of residual connections on learning"
# timm's recipe for both: 299 crop of a 342 resize (crop_pct 0.875), bicubic, inputs in [-1, 1].
PREPROCESS = Preprocess(
    input_size=(3, 299, 299), mean=(0.5,) * 3, std=(0.5,) * 3, resize=342, interpolation="bicubic"
)


def _cat(*xs: torch.Tensor) -> torch.Tensor:
    return torch.cat(xs, 1)


# ---------------------------------------------------------------- Inception-v3 (torchvision names)


class V3A(nn.Module):
    """35×35 module (Figure 5): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1."""

    def __init__(self, in_ch: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_ch, 64, 1)
        self.branch5x5_1 = ConvBN(in_ch, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = ConvBN(in_ch, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(self.pool(x)),
        )


class V3B(nn.Module):
    """35→17 grid reduction (Figure 10)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_ch, 384, 3, 2)
        self.branch3x3dbl_1 = ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, 2)
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return _cat(self.branch3x3(x), dbl, self.pool(x))


class V3C(nn.Module):
    """17×17 module with factorised 7×7 convolutions (Figure 6)."""

    def __init__(self, in_ch: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_ch, 192, 1)
        self.branch7x7_1 = ConvBN(in_ch, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_ch, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d7 = conv(d7)
        return _cat(self.branch1x1(x), b7, d7, self.branch_pool(self.pool(x)))


class V3D(nn.Module):
    """17→8 grid reduction."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_ch, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, 2)
        self.branch7x7x3_1 = ConvBN(in_ch, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, 2)
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return _cat(b3, b7, self.pool(x))


class V3E(nn.Module):
    """8×8 module with expanded filter banks (Figure 7)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_ch, 320, 1)
        self.branch3x3_1 = ConvBN(in_ch, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_ch, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = _cat(self.branch3x3_2a(b3), self.branch3x3_2b(b3))
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d3 = _cat(self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3))
        return _cat(self.branch1x1(x), b3, d3, self.branch_pool(self.pool(x)))


class V3Aux(nn.Module):
    """Auxiliary classifier on the 17×17×768 map (Figure 8)."""

    def __init__(self, in_ch: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, 3)  # (B, 768, 5, 5)
        self.conv0 = ConvBN(in_ch, 128, 1)
        self.conv1 = ConvBN(128, 768, 5)  # (B, 768, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.avgpool(self.conv1(self.conv0(self.pool(x)))).flatten(1))


V3_AUX_WEIGHT = 0.4  # the weight torchvision's reference recipe gives the auxiliary loss


class InceptionV3(AuxHeads, Classifier):
    def __init__(
        self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.Conv2d_1a_3x3 = ConvBN(in_chans, 32, 3, 2)  # (B, 32, 149, 149)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, 2)  # (B, 64, 73, 73)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(3, 2)  # (B, 192, 35, 35)
        self.Mixed_5b = V3A(192, 32)
        self.Mixed_5c = V3A(256, 64)
        self.Mixed_5d = V3A(288, 64)
        self.Mixed_6a = V3B(288)  # (B, 768, 17, 17)
        self.Mixed_6b = V3C(768, 128)
        self.Mixed_6c = V3C(768, 160)
        self.Mixed_6d = V3C(768, 160)
        self.Mixed_6e = V3C(768, 192)
        self.AuxLogits = V3Aux(768, num_classes) if aux_logits else None
        self.Mixed_7a = V3D(768)  # (B, 1280, 8, 8)
        self.Mixed_7b = V3E(1280)
        self.Mixed_7c = V3E(2048)  # (B, 2048, 8, 8)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2048, num_classes)
        _init_truncnormal(self)
        self.meta = ModelMeta(
            name="inception_v3",
            preprocess=PREPROCESS.with_channels(in_chans),
            first_conv="Conv2d_1a_3x3.conv",
            classifier="fc",
            paper=V3_PAPER,
            extra={"aux_classifiers": ["AuxLogits.fc"] if aux_logits else []},
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._reset_aux()
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool1(x))))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B, 768, 17, 17)
        if self.training and self.AuxLogits is not None:
            self._keep_aux(V3_AUX_WEIGHT, self.AuxLogits(x))
        return self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(self.avgpool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        if self.AuxLogits is not None:
            old = self.AuxLogits.fc
            self.AuxLogits.fc = nn.Linear(old.in_features, num_classes).to(old.weight.device)


# ---------------------------------------------------------------- Inception-v4 (timm names)


class Mixed3a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, 2)
        self.conv = ConvBN(64, 96, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.maxpool(x), self.conv(x))  # (B, 160, 73, 73)


class Mixed4a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(ConvBN(160, 64, 1), ConvBN(64, 96, 3))
        self.branch1 = nn.Sequential(
            ConvBN(160, 64, 1),
            ConvBN(64, 64, (1, 7), padding=(0, 3)),
            ConvBN(64, 64, (7, 1), padding=(3, 0)),
            ConvBN(64, 96, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branch0(x), self.branch1(x))  # (B, 192, 71, 71)


class Mixed5a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = ConvBN(192, 192, 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.conv(x), self.maxpool(x))  # (B, 384, 35, 35)


def _avg_proj(in_ch: int, out_ch: int) -> nn.Sequential:
    # TF "SAME" average pooling ignores the padding in the mean.
    return nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), ConvBN(in_ch, out_ch, 1))


class V4A(nn.Module):
    """Figure 4."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = ConvBN(384, 96, 1)
        self.branch1 = nn.Sequential(ConvBN(384, 64, 1), ConvBN(64, 96, 3, padding=1))
        self.branch2 = nn.Sequential(ConvBN(384, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1))
        self.branch3 = _avg_proj(384, 96)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x))


class V4ReductionA(nn.Module):
    """Figure 7 with k=192, l=224, m=256, n=384."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = ConvBN(384, 384, 3, 2)
        self.branch1 = nn.Sequential(ConvBN(384, 192, 1), ConvBN(192, 224, 3, padding=1), ConvBN(224, 256, 3, 2))
        self.branch2 = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branch0(x), self.branch1(x), self.branch2(x))  # (B, 1024, 17, 17)


class V4B(nn.Module):
    """Figure 5."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = ConvBN(1024, 384, 1)
        self.branch1 = nn.Sequential(
            ConvBN(1024, 192, 1), ConvBN(192, 224, (1, 7), padding=(0, 3)), ConvBN(224, 256, (7, 1), padding=(3, 0))
        )
        self.branch2 = nn.Sequential(
            ConvBN(1024, 192, 1),
            ConvBN(192, 192, (7, 1), padding=(3, 0)),
            ConvBN(192, 224, (1, 7), padding=(0, 3)),
            ConvBN(224, 224, (7, 1), padding=(3, 0)),
            ConvBN(224, 256, (1, 7), padding=(0, 3)),
        )
        self.branch3 = _avg_proj(1024, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x))


class V4ReductionB(nn.Module):
    """Figure 8."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(ConvBN(1024, 192, 1), ConvBN(192, 192, 3, 2))
        self.branch1 = nn.Sequential(
            ConvBN(1024, 256, 1),
            ConvBN(256, 256, (1, 7), padding=(0, 3)),
            ConvBN(256, 320, (7, 1), padding=(3, 0)),
            ConvBN(320, 320, 3, 2),
        )
        self.branch2 = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branch0(x), self.branch1(x), self.branch2(x))  # (B, 1536, 8, 8)


class V4C(nn.Module):
    """Figure 6; the two split branches keep timm's flat names."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = ConvBN(1536, 256, 1)
        self.branch1_0 = ConvBN(1536, 384, 1)
        self.branch1_1a = ConvBN(384, 256, (1, 3), padding=(0, 1))
        self.branch1_1b = ConvBN(384, 256, (3, 1), padding=(1, 0))
        self.branch2_0 = ConvBN(1536, 384, 1)
        self.branch2_1 = ConvBN(384, 448, (3, 1), padding=(1, 0))
        self.branch2_2 = ConvBN(448, 512, (1, 3), padding=(0, 1))
        self.branch2_3a = ConvBN(512, 256, (1, 3), padding=(0, 1))
        self.branch2_3b = ConvBN(512, 256, (3, 1), padding=(1, 0))
        self.branch3 = _avg_proj(1536, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1_0(x)
        b2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return _cat(
            self.branch0(x),
            self.branch1_1a(b1),
            self.branch1_1b(b1),
            self.branch2_3a(b2),
            self.branch2_3b(b2),
            self.branch3(x),
        )


class InceptionV4(Classifier):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            ConvBN(in_chans, 32, 3, 2),  # stem, Figure 3: (B, 32, 149, 149)
            ConvBN(32, 32, 3),
            ConvBN(32, 64, 3, padding=1),
            Mixed3a(),
            Mixed4a(),
            Mixed5a(),  # (B, 384, 35, 35)
            *[V4A() for _ in range(4)],
            V4ReductionA(),
            *[V4B() for _ in range(7)],
            V4ReductionB(),
            *[V4C() for _ in range(3)],  # (B, 1536, 8, 8)
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(dropout)  # section 3: dropout keep probability 0.8
        self.last_linear = nn.Linear(1536, num_classes)
        _init_truncnormal(self)
        self.meta = ModelMeta(
            name="inception_v4",
            preprocess=PREPROCESS.with_channels(in_chans),
            first_conv="features.0.conv",
            classifier="last_linear",
            paper=V4_PAPER,
            extra={"stage_parents": ["features"]},  # stem convs, then each block
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x).flatten(1))  # (B, 1536)
        return x if pre_logits else self.last_linear(x)


def _init_truncnormal(model: nn.Module, std: float = 0.1) -> None:
    # TF-style truncated-normal init (torchvision's Inception-v3 uses std 0.1); BN scale 1, shift 0.
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_model()
def inception_v3(num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True) -> InceptionV3:
    return InceptionV3(num_classes, in_chans, aux_logits)


@register_model()
def inception_v4(num_classes: int = 1000, in_chans: int = 3) -> InceptionV4:
    return InceptionV4(num_classes, in_chans)
