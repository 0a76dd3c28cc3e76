"""Per-sample transforms (uint8 on the CPU) and the on-device normaliser.

Evaluation is the model's :class:`~cnnlab.models.Preprocess`: resize the shorter side, center-crop
(zero-padding where the image is smaller), so train/valid/predict/export share one definition.
Training replaces the crop with random resized crop (or the eval crop) and adds flips, affine
jitter and colour jitter — all torchvision ``transforms.v2`` on uint8 tensors. Normalisation and
AlexNet's PCA lighting run on the device, on whole batches (DESIGN: uint8 until the device).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from cnnlab.model_meta import Preprocess

INTERPOLATION = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

# AlexNet (Krizhevsky et al. 2012, section 4.1): eigen-decomposition of the ImageNet RGB covariance,
# pixels in [0, 1]; the figures every reimplementation uses (fb.resnet.torch, timm).
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class MatchChannels(nn.Module):
    """Grey → RGB by repetition, RGB → grey by luma, so any data feeds any model."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # (C, H, W) uint8
        if img.shape[0] == self.channels:
            return img
        if self.channels == 3:
            return img.expand(3, -1, -1).contiguous()
        return v2.functional.rgb_to_grayscale(img)


class Letterbox(nn.Module):
    """Fit the image inside (h, w) keeping its aspect, centred on a grey canvas: pjreddie darknet's
    ``letterbox_image`` geometry (its integer sizes and offsets). Darknet's canvas is 0.5; in uint8 that
    is 128 (0.502)."""

    def __init__(self, h: int, w: int, interpolation: InterpolationMode, fill: int = 128) -> None:
        super().__init__()
        self.h, self.w, self.interpolation, self.fill = h, w, interpolation, fill

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # (C, H, W) uint8 → (C, h, w) uint8
        c, H, W = img.shape
        if self.w / W < self.h / H:
            nw, nh = self.w, max(1, H * self.w // W)
        else:
            nw, nh = max(1, W * self.h // H), self.h
        if (nh, nw) != (H, W):
            img = v2.functional.resize(img, [nh, nw], interpolation=self.interpolation, antialias=True)
        out = torch.full((c, self.h, self.w), self.fill, dtype=img.dtype)
        y, x = (self.h - nh) // 2, (self.w - nw) // 2
        out[:, y : y + nh, x : x + nw] = img
        return out


def resize_steps(pre: Preprocess) -> list[Callable]:
    """The evaluation geometry of ``pre``: uint8 image of any size → ``pre.input_size`` (H, W)."""
    _, h, w = pre.input_size
    interp = INTERPOLATION[pre.interpolation]
    if pre.resize_mode == "letterbox":
        return [Letterbox(h, w, interp)]
    # CenterCrop pads with zeros when the resized image is smaller
    return [v2.Resize(pre.resize, interpolation=interp, antialias=True), v2.CenterCrop((h, w))]


def eval_transform(pre: Preprocess) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (C, H, W) of any size → uint8 ``pre.input_size``."""
    return v2.Compose([MatchChannels(pre.channels), *resize_steps(pre)])


class PadToAtLeast(nn.Module):
    """Zero-pad an image smaller than (h, w) around its centre, as CenterCrop does; leave a larger one."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        self.h, self.w = h, w

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        H, W = img.shape[-2:]
        return v2.functional.center_crop(img, [max(H, self.h), max(W, self.w)]) if H < self.h or W < self.w else img


class StackCrops(nn.Module):
    """TenCrop's tuple of crops → one (10, C, H, W) tensor. (v2.Lambda would call its function on
    each crop of the tuple, not on the tuple.)"""

    def forward(self, crops: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.stack(crops)


def tencrop_transform(pre: Preprocess) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 image → (10, C, H, W): the four corners, the centre and their mirror images."""
    _, h, w = pre.input_size
    return v2.Compose(
        [
            MatchChannels(pre.channels),
            *resize_steps(pre)[:1],  # letterbox fills the input exactly, so its ten crops are two views
            PadToAtLeast(h, w),  # resized smaller than the input (LeNet: 28 in 32), the crops are of the padded image
            v2.TenCrop((h, w)),
            StackCrops(),
        ]
    )


def train_transform(
    pre: Preprocess,
    crop: str = "rrc",
    rrc_scale: tuple[float, float] = (0.08, 1.0),
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    rotation: float = 0.0,
    translate: float = 0.0,
    scale: tuple[float, float] = (1.0, 1.0),
    color_jitter: float = 0.0,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The augmentation pipeline; the randomness comes from torch's global RNG (seeded per sample)."""
    _, h, w = pre.input_size
    interp = INTERPOLATION[pre.interpolation]
    steps: list[Callable] = [MatchChannels(pre.channels)]
    if crop == "rrc":
        steps.append(v2.RandomResizedCrop((h, w), scale=tuple(rrc_scale), ratio=tuple(rrc_ratio), interpolation=interp, antialias=True))
    elif crop == "center":
        steps += resize_steps(pre)
    else:
        raise ValueError(f"crop must be 'rrc' or 'center', not {crop!r}")
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if rotation > 0 or translate > 0 or tuple(scale) != (1.0, 1.0):
        steps.append(
            v2.RandomAffine(degrees=rotation, translate=(translate, translate) if translate > 0 else None, scale=tuple(scale), interpolation=InterpolationMode.BILINEAR)
        )
    if color_jitter > 0:
        saturation = color_jitter if pre.channels == 3 else 0.0
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=saturation))
    return v2.Compose(steps)


class DeviceNormalize(nn.Module):
    """uint8 (B, C, H, W) on the device → normalised float, with optional PCA lighting noise."""

    def __init__(self, pre: Preprocess, pca_lighting: float = 0.0, channels_last: bool = False) -> None:
        super().__init__()
        c = pre.channels
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, c, 1, 1), persistent=False)
        self.pca_lighting = pca_lighting if c == 3 else 0.0
        self.register_buffer("eigval", torch.tensor(IMAGENET_EIGVAL), persistent=False)
        self.register_buffer("eigvec", torch.tensor(IMAGENET_EIGVEC), persistent=False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = x.float().div_(255)  # (B, C, H, W) in [0, 1]
        if self.pca_lighting > 0 and self.training:
            # Per image, add Σ_i α_i λ_i p_i with α_i ~ N(0, σ²) to every pixel (AlexNet §4.1).
            alpha = torch.randn(x.shape[0], 3, generator=generator, device="cpu").to(x.device) * self.pca_lighting
            rgb = (alpha * self.eigval) @ self.eigvec.T  # (B, 3)
            x = x + rgb.view(-1, 3, 1, 1)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)
