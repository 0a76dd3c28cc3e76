"""Darknet's activation functions by cfg name (activations.h), as element-wise torch functions."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnnlab.registry import Registry

Activation = Callable[[torch.Tensor], torch.Tensor]
ACTIVATIONS: Registry[Activation] = Registry("darknet activation")


def _reg(name: str) -> Callable[[Activation], Activation]:
    return ACTIVATIONS.register(name)


@_reg("linear")
def linear(x: torch.Tensor) -> torch.Tensor:
    return x


@_reg("logistic")
def logistic(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


@_reg("loggy")
def loggy(x: torch.Tensor) -> torch.Tensor:
    return 2 * torch.sigmoid(x) - 1


@_reg("relu")
def relu(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x)


@_reg("relu6")
def relu6(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x)


@_reg("elu")
def elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x)


@_reg("selu")
def selu(x: torch.Tensor) -> torch.Tensor:
    # darknet's constants are rounded (1.0507, 1.6732); the difference is < 1e-5 relative
    return torch.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * (torch.exp(x) - 1))


@_reg("leaky")
def leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


@_reg("ramp")
def ramp(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x) + 0.1 * x


@_reg("tanh")
def tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


@_reg("plse")
def plse(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x < -4, 0.01 * (x + 4), torch.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5))


@_reg("stair")
def stair(x: torch.Tensor) -> torch.Tensor:
    n = torch.floor(x)
    return torch.where(torch.remainder(n, 2) == 0, torch.floor(x / 2), (x - n) + torch.floor(x / 2))


@_reg("hardtan")
def hardtan(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, -1, 1)


@_reg("lhtan")
def lhtan(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x < 0, 0.001 * x, torch.where(x > 1, 0.001 * (x - 1) + 1, x))


@_reg("mish")
def mish(x: torch.Tensor) -> torch.Tensor:
    # AlexeyAB: x * tanh(softplus(x)) with softplus threshold 20, as torch's softplus
    return x * torch.tanh(F.softplus(x, threshold=20))


@_reg("hard_mish")
def hard_mish(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


@_reg("swish")
def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


@_reg("gelu")
def gelu(x: torch.Tensor) -> torch.Tensor:
    # AlexeyAB uses the tanh approximation
    return F.gelu(x, approximate="tanh")
