"""The module that gets exported: the (BN-folded) model behind an optional uint8 input stage.

With ``input_uint8`` the graph takes what a decoder gives, NCHW uint8 already at the model's input
size, and normalises inside, with the ops cnnlab's own normaliser uses
(:class:`cnnlab.data.transforms.DeviceNormalize`: ``x.float() / 255``, then ``(x - mean) / std``).
Resizing and cropping stay outside the graph (they depend on each image's size); the metadata says
how. Outputs are a tuple of float32 tensors: one for a classifier, one per [yolo]/[region] head for a
detector.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.model_meta import Preprocess


class ExportGraph(nn.Module):
    def __init__(self, model: nn.Module, pre: Preprocess, input_uint8: bool, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model = model.to(dtype).eval()
        if dtype == torch.bfloat16:  # layers torch has no bf16 kernel for are traced in float32
            from cnnlab.engine.fp32_islands import run_unsupported_in_fp32

            run_unsupported_in_fp32(self.model, torch.zeros(1, *pre.input_size, dtype=dtype))
        self.input_uint8 = input_uint8
        self.dtype = dtype
        c = pre.channels
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, c, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:  # (N, C, H, W) → tuple of (N, …)
        x = images
        if self.input_uint8:
            x = (x.to(torch.float32) / 255 - self.mean) / self.std
        out = self.model(x.to(self.dtype))
        outs = out if isinstance(out, (list, tuple)) else [out]
        return tuple(o.to(torch.float32) for o in outs)


def normalize_uint8(images: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 (N, C, H, W) → the float input the PyTorch model takes (reference for the uint8 graph)."""
    c = pre.channels
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, c, 1, 1)
    return (images.float() / 255 - mean) / std


def example_input(pre: Preprocess, input_uint8: bool, batch: int = 2) -> torch.Tensor:
    """A batch the exporters trace with (batch 2: a batch of 1 would be specialised as a constant)."""
    gen = torch.Generator().manual_seed(0)
    shape = (batch, *pre.input_size)
    if input_uint8:
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
    return torch.randn(shape, generator=gen)
