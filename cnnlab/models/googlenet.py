"""GoogLeNet / Inception-v1 (Szegedy et al. 2014, "Going deeper with convolutions") and
BN-Inception / Inception-v2 (Ioffe, Szegedy 2015, "Batch normalization").

``googlenet`` follows torchvision's layout so its ``state_dict`` loads strictly: the paper's
Table 1 widths and its two auxiliary classifiers (on 4a and 4d, loss weight 0.3, used in training
and skipped at inference), but — like the TensorFlow port behind torchvision's weights — batch norm
after every convolution instead of LRN, and a 3×3 convolution where the paper's "5×5" branch is.

``googlenet_paper`` is the network of the paper itself: no batch norm (biases instead), LRN after
the stem's first pool and third convolution, true 5×5 branches, dropout 0.4; it has no public
PyTorch weights.

``bn_inception`` is Figure 5 of the batch-norm paper: GoogLeNet with each 5×5 replaced by two 3×3,
average pooling in most pool branches, stride-2 "pass-through" modules (3c, 4e) instead of max-pool
layers, batch norm everywhere and no dropout or auxiliary heads.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models import register_model
from cnnlab.models._base import Classifier, ModelMeta, Preprocess
from cnnlab.models.layers import AuxHeads, ConvBN, ConvReLU, trunc_normal_

PAPER = "Szegedy et al. 2014, Going deeper with convolutions"
BN_PAPER = "Ioffe, Szegedy 2015, Batch normalization: accelerating deep network training (Figure 5)"
# torchvision's GoogLeNet weights come from TensorFlow: inputs scaled to [-1, 1].
PREPROCESS = Preprocess(input_size=(3, 224, 224), mean=(0.5,) * 3, std=(0.5,) * 3, resize=256)
# bvlc_googlenet's recipe for the paper network: subtract the mean pixel (RGB 123, 117, 104).
PAPER_PREPROCESS = Preprocess(
    input_size=(3, 224, 224), mean=(123 / 255, 117 / 255, 104 / 255), std=(1 / 255,) * 3, resize=256
)
# The Caffe BN-Inception recipe: subtract the mean pixel (RGB 128, 117, 104) on the 0-255 scale.
BN_PREPROCESS = Preprocess(
    input_size=(3, 224, 224), mean=(128 / 255, 117 / 255, 104 / 255), std=(1 / 255,) * 3, resize=256
)


ConvFactory = type[ConvBN] | type[ConvReLU]


class InceptionV1Block(nn.Module):
    """Four parallel branches concatenated: 1×1 | 1×1→3×3 | 1×1→k×k | pool→1×1, where k is the
    paper's 5 or torchvision's 3."""

    def __init__(
        self, in_ch: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int,
        conv: ConvFactory = ConvBN, k5: int = 3,
    ) -> None:  # fmt: skip
        super().__init__()
        self.branch1 = conv(in_ch, c1, 1)
        self.branch2 = nn.Sequential(conv(in_ch, c3r, 1), conv(c3r, c3, 3, padding=1))
        self.branch3 = nn.Sequential(conv(in_ch, c5r, 1), conv(c5r, c5, k5, padding=k5 // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv(in_ch, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class AuxV1(nn.Module):
    """Auxiliary classifier: pool to 4×4 (the paper's 5×5/3 average pool at 14×14), 1×1 conv 128,
    fc 1024, dropout 0.7, fc."""

    def __init__(self, in_ch: int, num_classes: int, conv: ConvFactory = ConvBN) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = conv(in_ch, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pool(x)).flatten(1)  # (B, 2048)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


# Table 1: in, #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj.
V1_BLOCKS: dict[str, tuple[int, ...]] = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}
AUX_WEIGHT = 0.3  # section 5: auxiliary losses are added with weight 0.3


class GoogLeNet(AuxHeads, Classifier):
    """``paper=False``: torchvision's layout (BN, 3×3 "5×5" branch); ``paper=True``: Table 1 as printed."""

    def __init__(
        self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True, paper: bool = False
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        conv: ConvFactory = ConvReLU if paper else ConvBN
        # bvlc_googlenet's LRN (size 5, α 1e-4, β 0.75); PyTorch divides α by n exactly as Caffe does.
        lrn = (lambda: nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)) if paper else nn.Identity
        self.conv1 = conv(in_chans, 64, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.lrn1 = lrn()
        self.conv2 = conv(64, 64, 1)
        self.conv3 = conv(64, 192, 3, padding=1)
        self.lrn2 = lrn()
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name, cfg in V1_BLOCKS.items():
            setattr(self, name, InceptionV1Block(*cfg, conv=conv, k5=5 if paper else 3))
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.aux1 = AuxV1(512, num_classes, conv) if aux_logits else None
        self.aux2 = AuxV1(528, num_classes, conv) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.4 if paper else 0.2)
        self.fc = nn.Linear(1024, num_classes)
        if paper:  # Xavier init as in bvlc_googlenet: plain ReLU nets without BN need the scale right
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.constant_(m.bias, 0.2 if isinstance(m, nn.Conv2d) else 0.0)
        else:
            _init_truncnormal(self, 0.01)
        self.meta = ModelMeta(
            name="googlenet_paper" if paper else "googlenet",
            preprocess=(PAPER_PREPROCESS if paper else PREPROCESS).with_channels(in_chans),
            first_conv="conv1.conv",
            classifier="fc",
            paper=PAPER,
            extra={"aux_classifiers": ["aux1.fc2", "aux2.fc2"] if aux_logits else []},
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._reset_aux()
        train_aux = self.training and self.aux1 is not None
        x = self.lrn1(self.maxpool1(self.conv1(x)))  # (B, 64, 56, 56)
        x = self.maxpool2(self.lrn2(self.conv3(self.conv2(x))))  # (B, 192, 28, 28)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (B, 480, 14, 14)
        x = self.inception4a(x)  # (B, 512, 14, 14)
        if train_aux:
            self._keep_aux(AUX_WEIGHT, self.aux1(x))
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (B, 528, 14, 14)
        if train_aux:
            self._keep_aux(AUX_WEIGHT, self.aux2(x))
        x = self.maxpool4(self.inception4e(x))  # (B, 832, 7, 7)
        return self.inception5b(self.inception5a(x))  # (B, 1024, 7, 7)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(self.avgpool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        for name in ("aux1", "aux2"):
            if getattr(self, name) is not None:
                old = getattr(self, name).fc2
                getattr(self, name).fc2 = nn.Linear(old.in_features, num_classes).to(old.weight.device)


class BNInceptionBlock(nn.Module):
    """1×1 | 1×1→3×3 | 1×1→3×3→3×3 | pool(→1×1). With ``stride=2`` the 1×1 branch is absent and
    the max-pool branch passes its input through unprojected (3c, 4e)."""

    def __init__(
        self, in_ch: int, c1: int, c3r: int, c3: int, d3r: int, d3: int, pool: str, proj: int, stride: int = 1
    ) -> None:
        super().__init__()
        self.branch1 = ConvBN(in_ch, c1, 1, eps=1e-5) if c1 else None
        self.branch2 = nn.Sequential(ConvBN(in_ch, c3r, 1, eps=1e-5), ConvBN(c3r, c3, 3, stride, 1, eps=1e-5))
        self.branch3 = nn.Sequential(
            ConvBN(in_ch, d3r, 1, eps=1e-5), ConvBN(d3r, d3, 3, 1, 1, eps=1e-5), ConvBN(d3, d3, 3, stride, 1, eps=1e-5)
        )
        pool_layer = (
            nn.AvgPool2d(3, 1, 1, ceil_mode=True, count_include_pad=False)
            if pool == "avg"
            else nn.MaxPool2d(3, stride, 0 if stride == 2 else 1, ceil_mode=True)
        )
        self.branch4 = nn.Sequential(pool_layer, ConvBN(in_ch, proj, 1, eps=1e-5)) if proj else pool_layer
        self.out_channels = c1 + c3 + d3 + (proj or in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.branch2(x), self.branch3(x), self.branch4(x)]
        if self.branch1 is not None:
            outs.insert(0, self.branch1(x))
        return torch.cat(outs, 1)


# Figure 5: in, #1×1, #3×3 reduce, #3×3, double #3×3 reduce, double #3×3, pool, pool proj, stride.
# The figure prints 576 channels after 4c/4d and 1024 after 4e; its own columns add up to 608 and
# 1056, which is what the layers produce (and what the Caffe BN-Inception model has).
BN_BLOCKS: dict[str, tuple] = {
    "inception3a": (192, 64, 64, 64, 64, 96, "avg", 32, 1),
    "inception3b": (256, 64, 64, 96, 64, 96, "avg", 64, 1),
    "inception3c": (320, 0, 128, 160, 64, 96, "max", 0, 2),
    "inception4a": (576, 224, 64, 96, 96, 128, "avg", 128, 1),
    "inception4b": (576, 192, 96, 128, 96, 128, "avg", 128, 1),
    "inception4c": (576, 160, 128, 160, 128, 160, "avg", 128, 1),
    "inception4d": (608, 96, 128, 192, 160, 192, "avg", 128, 1),
    "inception4e": (608, 0, 128, 192, 192, 256, "max", 0, 2),
    "inception5a": (1056, 352, 192, 320, 160, 224, "avg", 128, 1),
    "inception5b": (1024, 352, 192, 320, 192, 224, "max", 128, 1),
}


class BNInception(Classifier):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            ConvBN(in_chans, 64, 7, 2, 3, eps=1e-5),  # (B, 64, 112, 112)
            nn.MaxPool2d(3, 2, ceil_mode=True),  # (B, 64, 56, 56)
            ConvBN(64, 64, 1, eps=1e-5),
            ConvBN(64, 192, 3, 1, 1, eps=1e-5),
            nn.MaxPool2d(3, 2, ceil_mode=True),  # (B, 192, 28, 28)
        )
        blocks = {name: BNInceptionBlock(*cfg) for name, cfg in BN_BLOCKS.items()}
        self.blocks = nn.Sequential(*blocks.values())  # (B, 1024, 7, 7)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.meta = ModelMeta(
            name="bn_inception",
            preprocess=BN_PREPROCESS.with_channels(in_chans),
            first_conv="stem.0.conv",
            classifier="fc",
            paper=BN_PAPER,
            extra={"stage_parents": ["stem", "blocks"]},  # stem convs, then each block
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x).flatten(1)  # (B, 1024)
        return x if pre_logits else self.fc(x)


def _init_truncnormal(model: nn.Module, std: float) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std, bound=2 / std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_model()
def googlenet(num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True) -> GoogLeNet:
    return GoogLeNet(num_classes, in_chans, aux_logits)


@register_model()
def googlenet_paper(num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True) -> GoogLeNet:
    return GoogLeNet(num_classes, in_chans, aux_logits, paper=True)


@register_model()
def bn_inception(num_classes: int = 1000, in_chans: int = 3) -> BNInception:
    return BNInception(num_classes, in_chans)
