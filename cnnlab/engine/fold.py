"""Fold inference BatchNorm into the convolution before it, once, for the inference engine.

Eval-mode BatchNorm is a per-channel affine map, so ``bn(conv(x))`` is one convolution with scaled
weights and a bias: one pass over the activations fewer, and the conv+bias(+activation) pattern that
oneDNN fuses. Two kinds of network are folded in place (callers pass a copy):

* darknet's ``[convolutional]`` layers: the exact weights their eval forward computes on every call
  (:meth:`~cnnlab.darknet.layers.DarknetBatchNorm.affine`, float64 then cast), so outputs are
  bit-identical to the unfolded net's;
* any other module whose ``nn.Conv2d`` output feeds only an ``nn.BatchNorm2d`` (found by tracing the
  forward with torch.fx; when the forward does not trace, consecutive pairs inside ``nn.Sequential``).
"""

from __future__ import annotations

import torch
from torch import nn


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every foldable BatchNorm of ``model`` (in eval mode) in place; returns how many were folded."""
    from cnnlab.darknet.layers import Convolutional

    darknet = [m for m in model.modules() if isinstance(m, Convolutional) and m.bn is not None]
    for layer in darknet:
        _fold_darknet(layer)
    pairs = _conv_bn_pairs(model)
    for parent_conv, parent_bn, conv, bn in pairs:
        setattr(parent_conv[0], parent_conv[1], _folded_conv(conv, bn))
        setattr(parent_bn[0], parent_bn[1], nn.Identity())
    return len(darknet) + len(pairs)


def _new_conv(c: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups,
                     bias=True, padding_mode=c.padding_mode, device=weight.device, dtype=weight.dtype)  # fmt: skip
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv.eval()


@torch.no_grad()
def _fold_darknet(layer: nn.Module) -> None:
    """The same arithmetic as ``Convolutional.forward`` in eval mode, done once."""
    scale, shift = layer.bn.affine()
    layer.conv = _new_conv(layer.conv, layer.conv.weight * scale.reshape(-1, 1, 1, 1), shift)
    layer.bn = None


@torch.no_grad()
def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv then eval BN as one conv; the scale is computed in float64 (as darknet's fold above)."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / (var + bn.eps).sqrt()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    w = (conv.weight.double() * scale.reshape(-1, 1, 1, 1)).to(conv.weight.dtype)
    return _new_conv(conv, w, ((bias - mean) * scale + beta).to(conv.weight.dtype))


Slot = tuple[nn.Module, str]  # (parent module, attribute name): where a child lives


def _conv_bn_pairs(model: nn.Module) -> list[tuple[Slot, Slot, nn.Conv2d, nn.BatchNorm2d]]:
    """(conv slot, bn slot, conv, bn) for each Conv2d whose only use is an eval BatchNorm2d."""
    names = _traced_pairs(model)
    if names is None:
        names = _sequential_pairs(model)
    mods = dict(model.named_modules())
    out = []
    for conv_name, bn_name in names:
        conv, bn = mods[conv_name], mods[bn_name]
        if bn.training or not bn.track_running_stats or bn.running_var is None or conv.padding_mode != "zeros":
            continue
        out.append((slot(model, conv_name), slot(model, bn_name), conv, bn))
    return out


def slot(model: nn.Module, name: str) -> Slot:
    """The module that holds submodule ``name`` and the attribute it is held under."""
    parent, _, attr = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), attr


def _traced_pairs(model: nn.Module) -> list[tuple[str, str]] | None:
    """Conv→BN pairs from the traced forward, or None when the forward does not trace."""
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # data-dependent control flow etc.: fall back to nn.Sequential pairs
        return None
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    mods = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        if isinstance(mods.get(src.target), nn.Conv2d) and calls[src.target] == 1 and calls[node.target] == 1:
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        kids = list(mod.named_children())
        for (a, m1), (b, m2) in zip(kids, kids[1:]):
            if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + a, prefix + b))
    return pairs
