"""VGG (Simonyan, Zisserman 2014, "Very deep convolutional networks for large-scale image
recognition"), configurations A, B, D, E = ``vgg11/13/16/19``, with ``_bn`` variants that add batch
normalisation after every convolution (not in the paper; torchvision's addition).

Module names are torchvision's, so its ``state_dict`` loads strictly. The paper's fully-connected
head expects a 7×7 map (224×224 input); the adaptive pool keeps other sizes working, as torchvision.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cnnlab.models import register_model
from cnnlab.models._base import IMAGENET_MEAN, IMAGENET_STD, Classifier, ModelMeta, Preprocess

PAPER = "Simonyan, Zisserman 2014, Very deep convolutional networks for large-scale image recognition"
# torchvision's weights were trained with mean/std normalisation (the paper subtracts the mean RGB).
PREPROCESS = Preprocess(input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256)

# Table 1 of the paper: conv widths, "M" = 2×2/2 max-pool.
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_features(config: list[int | str], in_chans: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    ch = in_chans
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(nn.Conv2d(ch, int(v), 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU(inplace=True))
        ch = int(v)
    return nn.Sequential(*layers)


class VGG(Classifier):
    def __init__(
        self,
        config: str,
        batch_norm: bool,
        name: str,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = make_features(CONFIGS[config], in_chans, batch_norm)  # (B, 512, H/32, W/32)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        _init_weights(self)
        self.meta = ModelMeta(
            name=name,
            preprocess=PREPROCESS.with_channels(in_chans),
            first_conv="features.0",
            classifier="classifier.6",
            paper=PAPER,
            extra={"config": config, "batch_norm": batch_norm, "stage_parents": ["features"], "head_stages": 2},  # a stage per conv (+BN); fc6, fc7 in the head
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x).flatten(1)  # (B, 25088)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


    def adapt_state_dict(self, state_dict: dict) -> dict:
        """timm's VGG computes fc6/fc7 as convolutions (``pre_logits.fc1``: 7×7, ``fc2``: 1×1) and fc8 as
        ``head.fc``: the same weights, reshaped to linear layers. At 7×7 (224 input) the output is the
        same; timm's own pooling after fc7 only matters for larger inputs."""
        if "pre_logits.fc1.weight" not in state_dict:
            return state_dict
        renamed = {"pre_logits.fc1": "classifier.0", "pre_logits.fc2": "classifier.3", "head.fc": "classifier.6"}
        out = {}
        for key, value in state_dict.items():
            module, _, leaf = key.rpartition(".")
            if module in renamed:
                key = f"{renamed[module]}.{leaf}"
                value = value.flatten(1) if leaf == "weight" else value  # (out, C, kh, kw) → (out, C·kh·kw), C-major as flatten(1) of the map
            out[key] = value
        return out


def _init_weights(model: nn.Module) -> None:
    # He init for convs (the paper pre-trained A to initialise deeper nets; Glorot/He init makes
    # that unnecessary, as the paper notes after submission), N(0, 0.01) for fc layers.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _variant(name: str, config: str, batch_norm: bool) -> Callable[..., VGG]:
    def build(num_classes: int = 1000, in_chans: int = 3) -> VGG:
        return VGG(config, batch_norm, name, num_classes, in_chans)

    build.__name__ = name
    return build


for _depth, _config in ((11, "A"), (13, "B"), (16, "D"), (19, "E")):
    register_model(f"vgg{_depth}")(_variant(f"vgg{_depth}", _config, False))
    register_model(f"vgg{_depth}_bn")(_variant(f"vgg{_depth}_bn", _config, True))
