"""Building blocks shared by the model families."""

from __future__ import annotations

import torch
from torch import nn


class ConvBN(nn.Sequential):
    """Conv (no bias: BN's shift replaces it) → BatchNorm → ReLU.

    The child names ``conv`` / ``bn`` are the ones torchvision's GoogLeNet/Inception-v3 and timm's
    Inception-v4/Inception-ResNet-v2 use, so their ``state_dict`` keys load unchanged.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
        eps: float = 1e-3,  # TF-trained Inception weights use 1e-3, not PyTorch's 1e-5
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=eps)
        self.act = nn.ReLU(inplace=True)


class ConvReLU(nn.Sequential):
    """Conv (with bias) → ReLU: the pre-batch-norm block (the GoogLeNet paper), same child names."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int | tuple[int, int], stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding)
        self.act = nn.ReLU(inplace=True)


class AuxHeads:
    """Mixin for networks with auxiliary classifiers (GoogLeNet, Inception-v3).

    ``forward`` always returns the main logits, so evaluation, prediction and export need nothing
    special. During a training forward the auxiliary logits are kept; :func:`aux_loss` adds their
    weighted losses. At inference (``eval()``) the heads are skipped, as the papers do.
    """

    _aux_out: list[tuple[float, torch.Tensor]]

    def _reset_aux(self) -> None:
        self._aux_out = []

    def _keep_aux(self, weight: float, logits: torch.Tensor) -> None:
        self._aux_out.append((weight, logits))

    def aux_outputs(self) -> list[tuple[float, torch.Tensor]]:
        """``(loss weight, logits)`` of each auxiliary head from the last training forward."""
        return list(getattr(self, "_aux_out", []))


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers, however nested."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def aux_loss(model: nn.Module, criterion: nn.Module, target: torch.Tensor) -> torch.Tensor | float:
    """Weighted sum of the auxiliary heads' losses from the last forward (0.0 for most models).

    A training loop adds this to ``criterion(logits, target)``; it works for every model, with or
    without auxiliary heads (unwraps DDP/compile wrappers through ``.module``/``._orig_mod``).
    """
    inner = unwrap(model)
    outputs = inner.aux_outputs() if hasattr(inner, "aux_outputs") else []
    total: torch.Tensor | float = 0.0
    for weight, logits in outputs:
        total = total + weight * criterion(logits, target)
    return total


@torch.no_grad()
def trunc_normal_(t: torch.Tensor, std: float, bound: float = 2.0) -> torch.Tensor:
    """Fill ``t`` from N(0, std²) truncated to ±bound·std, in place.

    Same distribution as ``nn.init.trunc_normal_``, by redrawing the few (~4.6 %) samples outside
    the bounds; torch's inverse-CDF version is several times slower on CPU, which shows when building
    the 40-55 M parameter Inception nets in every test.
    """
    if t.is_meta:
        return t
    t.normal_()
    outside = t.abs() > bound
    while outside.any():
        t[outside] = torch.randn(int(outside.sum()), dtype=t.dtype, device=t.device)
        outside = t.abs() > bound
    return t.mul_(std)
