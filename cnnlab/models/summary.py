"""A darknet-style layer table for any cnnlab model: one row per conv / pool / connected / dropout
layer in execution order, each with its output shape and BFLOPs, then the totals.

Rows come from forward hooks on a single batch-1 forward in eval mode (so auxiliary heads, which
run only in training, are not listed — as at inference). Activations, batch norm and LRN are folded
into the layer before them, as darknet prints them; branch concatenations and residual sums are not
rows. A module of another kind can describe itself with ``summary_row(inp, out) -> LayerInfo``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

HEADER = "layer     filters    size              input                output"


@dataclass
class LayerInfo:
    kind: str  # conv | max | avg | connected | dropout | rbf | softmax
    in_shape: tuple[int, ...]  # per sample: (C, H, W) for maps, (N,) for vectors
    out_shape: tuple[int, ...]
    filters: int = 0
    size: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    macs: int = 0  # multiply-adds per sample
    groups: int = 1
    p: float = 0.0  # dropout probability

    @property
    def bflops(self) -> float:
        return 2 * self.macs / 1e9  # darknet counts a multiply-add as two operations


@dataclass
class Summary:
    rows: list[LayerInfo]
    params: int
    input_size: tuple[int, int, int]

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def bflops(self) -> float:
        return sum(r.bflops for r in self.rows)

    def table(self) -> str:
        lines = [HEADER] + [format_row(i, r) for i, r in enumerate(self.rows)]
        lines.append(f"Total BFLOPS {self.bflops:.3f}")
        lines.append(f"parameters {self.params:,}   multiply-adds {self.macs:,} ({self.macs / 1e9:.2f} G)")
        return "\n".join(lines)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _one(v: tuple[int, int]) -> str:
    return str(v[0]) if v[0] == v[1] else f"{v[0]},{v[1]}"


def _hwc(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{h:4d} x{w:4d} x{c:4d}"


def format_row(i: int, r: LayerInfo) -> str:
    """One table row in darknet's column layout (see the AlexNet table in docs/models.md)."""
    bf = f" {r.bflops:8.3f} BF" if r.macs else ""
    n_in, n_out = _numel(r.in_shape), _numel(r.out_shape)
    if r.kind in ("conv", "max", "avg") and len(r.in_shape) == 3:
        filters = f"{r.filters:7d}" if r.kind == "conv" else " " * 7
        kh, kw = r.size
        groups = f"  groups {r.groups}" if r.groups > 1 else ""
        return (
            f"{i:4d} {r.kind:<4}{filters}{kh:3d} x{kw:2d} / {_one(r.stride)} / {_one(r.pad)}"
            f"  {_hwc(r.in_shape)}  ->  {_hwc(r.out_shape)}{bf}{groups}"
        )
    if r.kind == "dropout":
        return f"{i:4d} {'dropout':<9}     p = {r.p:.2f}{n_in:21d}  ->  {n_out:4d}"
    if r.kind == "softmax":
        return f"{i:4d} {'softmax':<9}{n_out:44d}"
    return f"{i:4d} {r.kind:<9}{n_in:34d}  ->  {n_out:4d}{bf}"


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def describe(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> LayerInfo | None:
    """The row for one module call, or ``None`` for layers the table folds away."""
    in_shape, out_shape = tuple(inp.shape[1:]), tuple(out.shape[1:])
    if hasattr(module, "summary_row"):
        return module.summary_row(inp, out)
    if isinstance(module, nn.Conv2d):
        kh, kw = _pair(module.kernel_size)
        per_pixel = module.in_channels // module.groups * kh * kw
        return LayerInfo(
            "conv", in_shape, out_shape, module.out_channels, (kh, kw), _pair(module.stride),
            _pair(module.padding), per_pixel * _numel(out_shape), module.groups,
        )  # fmt: skip
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "max" if isinstance(module, nn.MaxPool2d) else "avg"
        return LayerInfo(
            kind, in_shape, out_shape, size=_pair(module.kernel_size), stride=_pair(module.stride),
            pad=_pair(module.padding),
        )  # fmt: skip
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        kind = "max" if isinstance(module, nn.AdaptiveMaxPool2d) else "avg"
        # Shown as the fixed pool it amounts to at this input size (exact when the sizes divide).
        stride = (max(in_shape[1] // out_shape[1], 1), max(in_shape[2] // out_shape[2], 1))
        size = (in_shape[1] - (out_shape[1] - 1) * stride[0], in_shape[2] - (out_shape[2] - 1) * stride[1])
        return LayerInfo(kind, in_shape, out_shape, size=size, stride=stride)
    if isinstance(module, nn.Linear):
        vectors = inp[0].numel() // module.in_features  # 1 unless applied per position
        macs = module.in_features * module.out_features * vectors
        return LayerInfo("connected", in_shape, out_shape, module.out_features, macs=macs)
    if isinstance(module, nn.Dropout):
        return LayerInfo("dropout", in_shape, out_shape, p=module.p)
    return None


def summarize(model: nn.Module, input_size: tuple[int, int, int]) -> Summary:
    """Run one ``(1, *input_size)`` forward and collect a row per listed layer."""
    rows: list[LayerInfo] = []

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            row = describe(module, args[0], out)
            if row is not None:
                rows.append(row)

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = model(torch.zeros(1, *input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    shape = tuple(logits.shape[1:])
    rows.append(LayerInfo("softmax", shape, shape))
    params = sum(p.numel() for p in model.parameters())
    return Summary(rows, params, input_size)
