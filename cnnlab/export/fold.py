"""BatchNorm folded into the preceding conv / fully connected layer, once, on a copy of the model.

Inference BatchNorm is a per-channel affine map ``y·scale + shift``; merged into the layer before it
the exported graph has one op fewer per block and no BatchNormalization nodes left for a runtime to
fuse (or not). Two ways, because the two kinds of network are built differently:

* darknet nets (:class:`~cnnlab.darknet.layers.Convolutional`, ``Connected``) already compute that
  affine map (``DarknetBatchNorm.affine``, float64, each flavor's epsilon) and fold it on every
  forward; here it is done once and the ``bn`` module removed, so the graph holds plain weights;
* zoo models are traced with ``torch.fx`` and every Conv→BatchNorm / Linear→BatchNorm pair whose
  conv output feeds only the BN is fused by ``torch.fx.experimental.optimization.fuse`` (PyTorch's
  own ``fuse_conv_bn_eval``). The model's Python graph is the only place that says which conv a BN
  follows (module order does not), hence the trace.
"""

from __future__ import annotations

import copy
import sys

import torch
from torch import nn


def count_batchnorms(model: nn.Module) -> int:
    """BatchNorm modules left in ``model`` (torch's and darknet's)."""
    from cnnlab.darknet.layers import DarknetBatchNorm

    return sum(isinstance(m, (nn.modules.batchnorm._BatchNorm, DarknetBatchNorm)) for m in model.modules())


def _fold_darknet(model: nn.Module) -> int:
    """Fold every darknet conv/connected layer's BN into its weights in place; returns how many."""
    from cnnlab.darknet.layers import Connected, Convolutional

    folded = 0
    for layer in model.modules():
        if not isinstance(layer, (Convolutional, Connected)) or layer.bn is None:
            continue
        scale, shift = layer.bn.affine()  # (n,), (n,): inference BN as x·scale + shift
        lin = layer.conv if isinstance(layer, Convolutional) else layer.fc
        shape = (-1,) + (1,) * (lin.weight.dim() - 1)
        lin.weight = nn.Parameter(lin.weight.detach() * scale.reshape(shape))
        old_bias = lin.bias.detach() * scale if lin.bias is not None else 0.0  # darknet's BN convs have none
        lin.bias = nn.Parameter((old_bias + shift).detach())
        layer.bn = None
        if isinstance(layer, Convolutional):
            layer.bn_enabled = False
        folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """(an eval-mode copy of ``model`` with BatchNorm folded, number of BN layers folded).

    ``model`` itself is left untouched. A zoo model ``torch.fx`` cannot trace is returned unfolded,
    with a note on stderr (its BatchNorms export as BatchNormalization nodes, still correct)."""
    from cnnlab.darknet.layers import DarknetLayer

    before = count_batchnorms(model)
    if before == 0:
        return copy.deepcopy(model).eval(), 0
    if any(isinstance(m, DarknetLayer) for m in model.modules()):
        folded_model = copy.deepcopy(model).eval()
        return folded_model, _fold_darknet(folded_model)
    from torch.fx.experimental.optimization import fuse

    try:
        folded_model = fuse(copy.deepcopy(model).eval(), inplace=True).eval()  # fx traces the copy
    except Exception as e:  # noqa: BLE001 — fx raises many types on code it cannot trace (data-dependent control flow)
        print(f"note: BatchNorm not folded ({type(e).__name__}: torch.fx cannot trace this model)", file=sys.stderr)
        return copy.deepcopy(model).eval(), 0
    return folded_model, before - count_batchnorms(folded_model)


@torch.no_grad()
def max_fold_error(model: nn.Module, folded: nn.Module, x: torch.Tensor) -> float:
    """Largest absolute difference between ``model`` and its folded copy on ``x`` (for tests)."""
    a, b = model.eval()(x), folded(x)
    a, b = (a if isinstance(a, (list, tuple)) else [a]), (b if isinstance(b, (list, tuple)) else [b])
    return max(float((u - v).abs().max()) for u, v in zip(a, b))
