"""Fold a ReLU, and a residual add followed by a ReLU, into the packed convolution before them.

After BatchNorm folding a zoo network is conv → ReLU and, in residual blocks, conv → add → ReLU.
Each ReLU and add is another pass over the activations; oneDNN can apply both inside the
convolution (post-ops: the add as a binary post-op, then the ReLU). ResNet-18 at 224 spends about
0.5 ms of a 33 ms forward (one thread, AMD EPYC Zen 4) in separate adds and ReLUs, which OpenVINO
fuses the same way. Darknet nets get their activations fused at packing (:mod:`.packed_conv`) and
are left alone here.

The pattern is found in the traced forward (torch.fx), run once on an example input so the add is
fused only where both sides have the same shape and dtype (oneDNN's binary post-op would otherwise
broadcast or refuse); a network that does not trace runs as it was.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from cnnlab.engine.fp32_islands import Fp32Island
from cnnlab.engine.packed_conv import PackedConv2d
from cnnlab.engine.strided_pool import StridedMaxPool2d
from cnnlab.engine.winograd import WinogradConv2d

RELU_FUNCTIONS = (torch.relu, torch.relu_, F.relu)
ADD_FUNCTIONS = (operator.add, torch.add)


class PackedConvAddReLU(nn.Module):
    """``relu(conv(x) + other)``: one oneDNN call for a packed conv, the sum after the product for Winograd."""

    def __init__(self, conv: PackedConv2d | WinogradConv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self.conv.add_relu(x, other)


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (PackedConv2d, WinogradConv2d, StridedMaxPool2d, Fp32Island)) or super().is_leaf_module(m, qualname)


def fuse_relus(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` (folded and packed) with its conv→ReLU and conv→add→ReLU runs fused, as a new
    GraphModule sharing the weights; ``model`` itself when nothing fuses or it does not trace.
    ``example`` is an input of the size, dtype and layout the model will see."""
    from cnnlab.darknet.model import DarknetNet

    if any(isinstance(m, DarknetNet) for m in model.modules()):
        return model
    try:
        graph = _Tracer().trace(model)
    except Exception:  # data-dependent control flow etc.
        return model
    gm = torch.fx.GraphModule(model, graph)
    with torch.inference_mode():
        ShapeProp(gm).propagate(example)  # each node's output shape, in node.meta["tensor_meta"]
    fused = sum(_fuse_at(gm, node) for node in list(gm.graph.nodes) if _is_relu(gm, node))
    if not fused:
        return model
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _fuse_at(gm: torch.fx.GraphModule, relu: torch.fx.Node) -> bool:
    src = _through_identities(gm, relu.args[0])
    if src is None:
        return False
    if _packed(gm, src):
        conv = copy.copy(gm.get_submodule(str(src.target)))  # shares the weights; the traced-from model keeps its conv
        conv.attr, conv.scalars = "relu", []
        name = _add_module(gm, f"{src.target}_relu", conv)
        _replace(gm, relu, name, src.args)
        return True
    if not _is_add(src):
        return False
    for conv_side, other in ((src.args[0], src.args[1]), (src.args[1], src.args[0])):
        conv = _through_identities(gm, conv_side)
        if conv is not None and _packed(gm, conv) and _same_tensor_meta(conv, other):
            name = _add_module(gm, f"{conv.target}_add_relu", PackedConvAddReLU(gm.get_submodule(str(conv.target))))
            _replace(gm, relu, name, (conv.args[0], other))
            return True
    return False


def _replace(gm: torch.fx.GraphModule, relu: torch.fx.Node, module: str, args: tuple) -> None:
    """A call of ``module`` in place of ``relu``, keeping its example shape for later matches."""
    with gm.graph.inserting_before(relu):
        fused = gm.graph.call_module(module, args)
    fused.meta = dict(relu.meta)
    relu.replace_all_uses_with(fused)


def _through_identities(gm: torch.fx.GraphModule, node: object) -> torch.fx.Node | None:
    """The node behind a chain of nn.Identity calls (folded BatchNorms), each the only use of the
    one before; None when a value on the way is used elsewhere."""
    if not isinstance(node, torch.fx.Node) or len(node.users) != 1:
        return None
    while node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), nn.Identity):
        node = node.args[0]
        if not isinstance(node, torch.fx.Node) or len(node.users) != 1:
            return None
    return node


def _same_tensor_meta(a: torch.fx.Node, b: object) -> bool:
    """Both nodes give tensors of one shape and dtype in the example run."""
    if not isinstance(b, torch.fx.Node):
        return False
    ma, mb = a.meta.get("tensor_meta"), b.meta.get("tensor_meta")
    return ma is not None and mb is not None and ma.shape == mb.shape and ma.dtype == mb.dtype


def _packed(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return False
    m = gm.get_submodule(str(node.target))
    return isinstance(m, (PackedConv2d, WinogradConv2d)) and m.attr == "none"


def _is_relu(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))) is nn.ReLU
    if node.op == "call_function":
        return node.target in RELU_FUNCTIONS and len(node.args) == 1
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _is_add(node: torch.fx.Node) -> bool:
    if node.op == "call_function" and node.target in ADD_FUNCTIONS:
        return len(node.args) == 2 and not node.kwargs
    return node.op == "call_method" and node.target == "add" and len(node.args) == 2 and not node.kwargs


def _add_module(gm: torch.fx.GraphModule, name: str, module: nn.Module) -> str:
    name = name.replace(".", "_")
    gm.add_submodule(name, module)
    return name
