"""Convolutions with their weights reordered once into oneDNN's blocked layout, the activation fused.

An eager ``F.conv2d`` on a channels_last CPU tensor reorders its weights into oneDNN's layout on
every call, then writes the output, which the activation reads and writes again. Here the weights
are reordered once at load (``mkldnn._reorder_convolution_weight``, the op inductor's freezing pass
uses) and the bias and a ReLU/leaky ReLU run inside the convolution (``mkldnn._convolution_pointwise``).
Measured on darknet.cfg (one thread, batch 1): about 1.3x over the folded eager convs in fp32 and
1.45x in bf16 (bench/infer.py has the side-by-side figures).

Only plain zero-padded 2-D convolutions on CPU tensors are packed; everything else stays as it was.
Where layers run on one thread, a float32 3×3 stride-1 convolution may instead take a Winograd
kernel (:mod:`.winograd`), if that times faster in the network on this machine (:mod:`.kernel_choice`,
remembered by :mod:`.kernel_cache`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cnnlab.engine import kernel_cache, kernel_choice, winograd
from cnnlab.engine.fold import slot
from cnnlab.threads import one_thread

MARGIN = 1.1  # a Winograd kernel replaces the packed one only when at least 10 % faster (timings wobble)
# Darknet nets promise the real darknet's outputs (its reference runs within rtol 1e-4), and some
# sit near that edge already (yolov3-tiny: 0.93 of the tolerance used with direct convolutions);
# F(4×4)'s rounding, ~2x the direct convolution's, reaches 1.04 there, F(2×2)'s stays below it.
DARKNET_TILES = (2,)
# darknet activation name → (oneDNN post-op, its scalars); the rest run after the conv as before
FUSABLE = {"linear": ("none", []), "relu": ("relu", []), "leaky": ("leaky_relu", [0.1])}


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class PackedConv2d(nn.Module):
    """``act(conv2d(x, w, b))`` with ``w`` prepacked for inputs of ``input_size`` (N, C, H, W).

    Other input sizes still compute the right result (oneDNN reorders as needed), only slower."""

    def __init__(self, conv: nn.Conv2d, input_size: tuple[int, ...], attr: str = "none", scalars: list[float] | None = None) -> None:
        super().__init__()
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.attr, self.scalars = attr, list(scalars or [])
        self.out_channels = conv.out_channels
        w = conv.weight.detach()
        self.weight = torch.ops.mkldnn._reorder_convolution_weight(
            w, self.padding, self.stride, self.dilation, self.groups, list(input_size)
        )  # fmt: skip
        self.bias = conv.bias.detach().clone() if conv.bias is not None else None

    @staticmethod
    def can_pack(conv: nn.Module) -> bool:
        return (
            type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and conv.weight.device.type == "cpu" and conv.weight.dtype in (torch.float32, torch.bfloat16)
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) channels_last → (N, out, H', W')
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups, self.attr, self.scalars, ""
        )  # fmt: skip

    def add_relu(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``relu(conv(x) + other)`` in one oneDNN call (the sum as a binary post-op)."""
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, other, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups, "add", 1.0, "relu", [], ""
        )  # fmt: skip


def pack_convolutions(model: nn.Module, input_size: tuple[int, ...], winograd_too: bool = False) -> int:
    """Replace the convolutions of ``model`` (already folded, in its final dtype) by packed ones, in
    place; darknet ``[convolutional]`` layers also get their activation fused. Returns how many.

    ``input_size`` is the network input (N, C, H, W); each conv's own input size is found by running
    the model once with hooks, so the packing matches the shapes it will see. ``winograd_too``: the
    layers will run on one intra-op thread, so 3×3 convolutions may take Winograd's kernels where
    those time faster. (On two threads they parallelise poorly: ResNet-18 at batch 1 took 37 ms
    with F(4×4) on every eligible conv against 19 ms packed, on this VM's slow OpenMP wake-ups.)"""
    shapes = _conv_input_sizes(model, input_size)
    choices = kernel_cache.Choices() if winograd_too else None
    undecided: list[kernel_choice.Layer] = []
    n = 0
    for name, conv in list(model.named_modules()):
        if name not in shapes or not PackedConv2d.can_pack(conv):
            continue
        owner, attr = slot(model, name)
        post = _darknet_post_op(owner, attr)
        act = post or ("none", [])
        setattr(owner, attr, _kernel_for(conv, shapes[name], act, (owner, attr), choices, undecided))
        if post is not None:
            owner.act = _identity  # the activation now runs inside the conv
        n += 1
    if undecided and choices is not None:
        one_image = torch.zeros((1, *input_size[1:]), dtype=torch.float32).contiguous(memory_format=torch.channels_last)
        handicaps = {name: MARGIN for layer in undecided for name in layer.candidates if name != "packed"}
        with one_thread():  # as the layers will run
            for key, pick in kernel_choice.choose_kernels(model, one_image, undecided, handicaps).items():
                choices.add(key, pick)
        choices.save()
    return n


def _kernel_for(conv: nn.Conv2d, input_size: tuple[int, ...], act: tuple[str, list[float]], where: tuple[nn.Module, str],
                choices: kernel_cache.Choices | None, undecided: list[kernel_choice.Layer]) -> nn.Module:  # fmt: skip
    """The kernel ``conv`` runs as: its cached choice where one is known (only that kernel is built),
    else the packed conv; a 3×3 layer with no cached choice also joins ``undecided``, with its
    candidates, to be timed in the network."""
    if choices is None or not winograd.eligible(conv):
        return PackedConv2d(conv, input_size, *act)
    tiles = DARKNET_TILES if _in_darknet(where[0]) else winograd.TILES
    names = ["packed"] + [f"winograd{t}" for t in tiles]
    key = kernel_cache.layer_key(conv, (1, *input_size[1:]), act[0], names)  # what the timing runs
    known = choices.get(key)
    if known in names[1:]:
        return winograd.WinogradConv2d(conv, int(known.removeprefix("winograd")), *act)
    packed = PackedConv2d(conv, input_size, *act)
    if known != "packed":
        candidates = {"packed": packed} | {f"winograd{t}": winograd.WinogradConv2d(conv, t, *act) for t in tiles}
        undecided.append(kernel_choice.Layer(*where, key, candidates))
    return packed


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _in_darknet(owner: nn.Module) -> bool:
    from cnnlab.darknet.layers import Convolutional

    return isinstance(owner, Convolutional)


def _darknet_post_op(owner: nn.Module, attr: str) -> tuple[str, list[float]] | None:
    """The fusable activation of a folded darknet [convolutional] whose ``conv`` this is, else None."""
    from cnnlab.darknet.layers import Convolutional

    if not isinstance(owner, Convolutional) or attr != "conv" or owner.bn is not None or owner.pj_1x1:
        return None
    return FUSABLE.get(owner.act_name)


def _conv_input_sizes(model: nn.Module, input_size: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Each nn.Conv2d's input size in one forward of zeros (pj_1x1 darknet layers never call theirs)."""
    sizes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Callable:
        def hook(_m: nn.Module, args: tuple) -> None:  # a pre-hook returning a value would replace the args
            sizes.setdefault(name, tuple(args[0].shape))

        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules() if type(m) is nn.Conv2d]
    try:
        p = next(model.parameters())
        x = torch.zeros(input_size, dtype=p.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return sizes
