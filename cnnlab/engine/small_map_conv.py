"""Convolutions on tiny feature maps as one matrix product, for bf16 training on the CPU.

Why this exists: under CPU bf16 autocast, oneDNN's convolution *backward* on maps of a few pixels
(ResNet's last stage at 64×64 input is 2×2; at CIFAR's 32×32 it is 1×1) runs at about 30 GFLOP/s,
while a bf16 matrix product on the same core reaches about 800 GFLOP/s (AMX). Measured here on
ResNet-18, 64×64, batch 128, one thread: the three 512→512 3×3 convs on 2×2 maps took a third of
the whole train step. Written as im2col + matmul (``F.unfold``/``F.fold``), those layers run about
3.5× faster, and the whole step 1.3-1.6× faster. On maps of 4×4 the two are even and from 8×8 oneDNN wins,
so only maps of at most :data:`MAX_PIXELS` pixels take this path. No library offers this routing.

The swap keeps the same ``Parameter`` objects and ``state_dict`` keys, so checkpoints, optimizers
and EMA see no difference; outside bf16 autocast on the CPU, or without autograd, the layer is a
plain ``nn.Conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_PIXELS = 4  # output-map pixels (H×W) up to which the matmul path is faster here (see above)


class _UnfoldConv2d(torch.autograd.Function):
    """conv2d (groups=1, zero padding) as ``unfold → matmul`` with a matmul backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):  # type: ignore[override]
        n, _, h, w = x.shape
        out_c, _, kh, kw = weight.shape
        cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (N, C·kh·kw, L)
        ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        cols = cols.transpose(1, 2).reshape(n * ho * wo, -1)  # one row per output pixel
        out = cols @ weight.reshape(out_c, -1).t()
        if bias is not None:
            out = out + bias
        ctx.save_for_backward(cols, weight)
        ctx.geometry = ((h, w), (ho, wo), stride, padding, dilation, bias is not None)
        # (N·Ho·Wo, O) is already NHWC: hand it out as a channels_last NCHW view, no copy.
        return out.view(n, ho, wo, out_c).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        cols, weight = ctx.saved_tensors
        (h, w), (ho, wo), stride, padding, dilation, has_bias = ctx.geometry
        out_c = weight.shape[0]
        n = grad_out.shape[0]
        g = grad_out.permute(0, 2, 3, 1).reshape(n * ho * wo, out_c)
        grad_w = (g.t() @ cols).view_as(weight) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(0) if has_bias and ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_cols = (g @ weight.reshape(out_c, -1)).view(n, ho * wo, -1).transpose(1, 2)
            grad_x = F.fold(grad_cols, (h, w), weight.shape[2:], dilation=dilation, padding=padding, stride=stride)
            grad_x = grad_x.contiguous(memory_format=torch.channels_last)
        return grad_x, grad_w, grad_b, None, None, None


def unfold_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """Same result as ``F.conv2d`` (groups=1, zero padding), computed as im2col + matmul."""
    return _UnfoldConv2d.apply(x, weight, bias, stride, padding, dilation)


class SmallMapConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that takes the matmul path for tiny maps under CPU bf16 autocast training."""

    def _takes_matmul_path(self, x: torch.Tensor) -> bool:
        if not (x.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")):
            return False
        if torch.get_autocast_dtype("cpu") != torch.bfloat16 or x.dim() != 4:
            return False
        h, w = x.shape[-2:]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        ph, pw = self.padding  # type: ignore[misc]  (string padding is excluded in from_conv)
        ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        return 0 < ho * wo <= MAX_PIXELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._takes_matmul_path(x):
            return super().forward(x)
        dtype = torch.get_autocast_dtype("cpu")
        bias = self.bias.to(dtype) if self.bias is not None else None
        with torch.autocast("cpu", enabled=False):
            return unfold_conv2d(
                x.to(dtype), self.weight.to(dtype), bias, self.stride, self.padding, self.dilation  # type: ignore[arg-type]
            )

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> nn.Conv2d:
        """The same layer (same Parameter objects) as a SmallMapConv2d, or ``conv`` if not eligible."""
        if type(conv) is not nn.Conv2d or conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            return conv
        new = cls.__new__(cls)
        new.__dict__ = conv.__dict__.copy()  # shallow: shares _parameters/_buffers, so same tensors and keys
        return new


def route_small_map_convs(model: nn.Module) -> int:
    """Swap every eligible ``nn.Conv2d`` in ``model`` for a :class:`SmallMapConv2d`; returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = SmallMapConv2d.from_conv(child) if isinstance(child, nn.Conv2d) else child
            if new is not child:
                setattr(parent, name, new)
                swapped += 1
    return swapped
