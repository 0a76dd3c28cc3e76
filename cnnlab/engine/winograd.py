"""3×3 stride-1 convolutions by Winograd's minimal filtering, F(2×2, 3×3) and F(4×4, 3×3).

Each output tile of m×m pixels comes from an (m+2)×(m+2) input tile: both the tile and the filter
go through small fixed linear transforms, after which the convolution is (m+2)² independent
matrix products over the channels, one per tile position, followed by an inverse transform
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). F(4×4, 3×3) does 4× fewer
multiplications than the direct convolution and F(2×2, 3×3) 2.25× fewer, paid for by the transforms
(memory passes) and by transformed filters 4× / 1.8× the size.

Why by hand: torch offers no Winograd convolution on this CPU. Its oneDNN convolutions run direct
kernels (brgconv in ``ONEDNN_VERBOSE``, as OpenVINO's per-layer counters show for its own), and its
NNPACK entry point (``torch._nnpack_spatial_convolution``, Winograd inside) fails here with
"NNPACK SpatialConvolution_updateOutput failed". Written with torch's own matrix products (MKL) it beats the prepacked oneDNN convolution on ResNet's
middle stages at batch 1 (one thread, AMD EPYC Zen 4, 128 channels on 28×28: 1.1 ms against 2.0),
and loses where the transforms dominate (few channels on large maps) or the transformed filters
outgrow the caches (512 channels on 7×7), and on several threads (each of its steps is a small
parallel region). So the engine times it against the packed convolution inside the network, where
layers run on one thread, and keeps whichever is faster (:mod:`cnnlab.engine.kernel_choice`).

Rounding differs from the direct convolution (the transforms add and scale): about 1e-6 of the
largest output for F(2×2), 3e-6 for F(4×4), in float32. bfloat16 networks never take this path.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import nn

# (Bᵀ, G, Aᵀ) per output tile size m. F(2×2) interpolates at 0, ±1, ∞ (Lavin & Gray); F(4×4) at
# 0, ±1, 2, -1/2, ∞ rather than their 0, ±1, ±2, ∞: measured here on 64-256 channels, a largest
# error of 2.5-3e-6 of the largest output against 6-8e-6 (the direct convolution: 0.8-1.7e-6).
# Both keep the point 1 second, so Aᵀ's second column is all ones (the bias trick in _product).
_TRANSFORMS = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [[1, 3 / 2, -2, -3 / 2, 1, 0], [0, -1, -5 / 2, -1 / 2, 1, 0], [0, 1, 1 / 2, -5 / 2, 1, 0],
         [0, -1 / 2, -1, 1 / 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 1, 3 / 2, -2, -3 / 2, 1]],
        [[1, 0, 0], [-1 / 3, -1 / 3, -1 / 3], [1 / 3, -1 / 3, 1 / 3],
         [1 / 15, 2 / 15, 4 / 15], [-16 / 15, 8 / 15, -4 / 15], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -1 / 2, 0], [0, 1, 1, 4, 1 / 4, 0], [0, 1, -1, 8, -1 / 8, 1]],
    ),
}  # fmt: skip
TILES = tuple(_TRANSFORMS)


def eligible(conv: nn.Module) -> bool:
    """A float32 3×3 convolution this module computes: stride 1, no dilation or groups, zero padding
    of at most 2 on every side."""
    return (
        type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
        and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str) and all(0 <= p <= 2 for p in conv.padding)
        and conv.weight.dtype == torch.float32 and conv.weight.device.type == "cpu"
    )  # fmt: skip


class WinogradConv2d(nn.Module):
    """``act(conv2d(x, w, b))`` (or ``relu(conv2d(x, w, b) + other)`` through :meth:`add_relu`) for
    channels_last float32 inputs, by F(m×m, 3×3). ``attr``/``scalars`` name the activation as
    :class:`~cnnlab.engine.packed_conv.PackedConv2d` does ("none", "relu", "leaky_relu" [slope])."""

    def __init__(self, conv: nn.Conv2d, tile: int, attr: str = "none", scalars: list[float] | None = None) -> None:
        super().__init__()
        bt, g, at = (torch.tensor(t, dtype=torch.float64) for t in _TRANSFORMS[tile])
        self.tile, self.padding = tile, tuple(conv.padding)
        self.attr, self.scalars = attr, list(scalars or [])
        self.out_channels = conv.out_channels
        a = bt.shape[0]
        # each filter transformed, G w Gᵀ, as one product giving (a², C, O): a C→O matrix per tile
        # position, the right operand of the batched product (float32 rounding here is ~1e-7, far
        # below the transforms' own)
        w = conv.weight.detach().float().transpose(0, 1).reshape(conv.in_channels * conv.out_channels, 9)
        u = torch.kron(g, g).float() @ w.T
        self.register_buffer("u", u.view(a * a, conv.in_channels, conv.out_channels))
        # the tile transforms, applied one axis at a time (a third of the work of Bᵀ⊗Bᵀ at once)
        self.register_buffer("bt", bt.float().expand(a, a, a), persistent=False)
        self.register_buffer("at", at.float().expand(tile, tile, a), persistent=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, out = self._product(x)
        if self.attr == "relu":
            torch.clamp_min(y, 0, out=out)
        elif self.attr == "leaky_relu":
            torch._C._nn.leaky_relu(y, self.scalars[0], out=out)
        else:
            out.copy_(y)
        return self._cropped(out, x)

    def add_relu(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        y, out = self._product(x)
        torch.add(y, self._tiled(other.permute(0, 2, 3, 1), out.shape), out=out)
        return self._cropped(out.relu_(), x)

    def _product(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """conv2d(x, w) + bias as a (N, th, m, tw, m, O) view of the tiles' outputs, and an empty
        tensor of that shape to write it to (the NHWC output, whole tiles)."""
        n, c, h, w = x.shape
        m, a, o = self.tile, self.tile + 2, self.out_channels
        (th, tw), (ph, pw) = self._tiles(x), self.padding
        hp, wp = th * m + 2, tw * m + 2
        space = _WORKSPACE
        # NHWC, zero-padded so that every tile is whole
        xp = space.get(0, (n, hp, wp, c)).zero_()
        xp[:, ph : ph + h, pw : pw + w].copy_(x.permute(0, 2, 3, 1))
        # the overlapping (a, a) tiles as (a, a·N·th·tw·C)
        tiles = xp.as_strided((a, a, n, th, tw, c), (wp * c, c, hp * wp * c, m * wp * c, m * c, 1))
        d = space.get(1, (a, a, n, th, tw, c)).copy_(tiles).view(a, -1)
        e = torch.mm(self.bt[0], d, out=space.get(0, d.shape)).view(a, a, -1)
        v = torch.bmm(self.bt, e, out=space.get(1, e.shape))  # Bᵀ d B
        prod = torch.bmm(v.view(a * a, n * th * tw, c), self.u, out=space.get(0, (a * a, n * th * tw, o)))
        # Aᵀ's second column is all ones: a bias on that entry reaches every output pixel once
        prod[a + 1].add_(self.bias)
        z = torch.mm(self.at[0], prod.view(a, -1), out=space.get(1, (m, a * n * th * tw * o))).view(m, a, -1)
        y = torch.bmm(self.at, z, out=space.get(0, (m, m, z.shape[2])))  # Aᵀ M A, (m, m, tiles·O)
        y = y.view(m, m, n, th, tw, o).permute(2, 3, 0, 4, 1, 5)
        return y, torch.empty(y.shape, dtype=x.dtype)

    def _out_size(self, x: torch.Tensor) -> tuple[int, int]:
        h, w = (x.shape[2 + i] + 2 * self.padding[i] - 2 for i in (0, 1))
        return h, w

    def _tiles(self, x: torch.Tensor) -> tuple[int, int]:
        ho, wo = self._out_size(x)
        return -(-ho // self.tile), -(-wo // self.tile)

    def _tiled(self, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """An NHWC tensor of the output's size as (N, th, m, tw, m, O), zero-padded to whole tiles."""
        n, th, m, tw, _, o = shape
        if (t.shape[1], t.shape[2]) != (th * m, tw * m):
            t = F.pad(t, (0, 0, 0, tw * m - t.shape[2], 0, th * m - t.shape[1]))
        return t.reshape(shape)

    def _cropped(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The (N, th, m, tw, m, O) result as a channels_last (N, O, H', W') tensor."""
        n, th, m, tw, _, o = out.shape
        ho, wo = self._out_size(x)
        out = out.view(n, th * m, tw * m, o)
        if th * m != ho or tw * m != wo:
            out = out[:, :ho, :wo].contiguous()
        return out.permute(0, 3, 1, 2)


class _Workspace(threading.local):
    """Scratch tensors reused by every Winograd layer a thread runs (layers run one after another
    in a thread; engine streams are threads of their own). Fresh tensors of several MB per layer
    would each be mapped and faulted in by the allocator again on every call: measured 64→64 channels
    on 56×56, one thread, 1.3 ms a call with this reuse and up to 8 ms without. Each thread's two
    buffers grow to the largest layer it has run and are kept."""

    def __init__(self) -> None:
        self.flat: list[torch.Tensor] = [torch.empty(0), torch.empty(0)]

    def get(self, slot: int, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        numel = math.prod(shape)
        if self.flat[slot].numel() < numel:
            with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
                self.flat[slot] = torch.empty(numel)
        return self.flat[slot][:numel].view(shape)


_WORKSPACE = _Workspace()
