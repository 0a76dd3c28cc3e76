"""Layers that torch cannot compute in bfloat16 on this device, run in float32 inside a bf16 network.

Some CPU kernels have no bfloat16 version (``nn.LocalResponseNorm`` pools through ``avg_pool3d``;
``torch.cdist``), so a zoo net with such a layer (AlexNet, the paper's GoogLeNet), or any net a user
brings, would stop with "not implemented for 'BFloat16'" under ``--precision bf16``. Which ops have
a kernel depends on the torch build and the device, so no list is kept here: one trial forward on
the example input finds the layer that fails (the innermost module running when it raised), that
layer is wrapped to compute in float32, and the trial runs again until the network goes through.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError

_NOT_IN_BF16 = "BFloat16"  # torch's NotImplementedError / RuntimeError names the dtype it lacks


class Fp32Island(nn.Module):
    """``layer`` computed in float32: its tensor inputs go up to float32, its outputs back to bfloat16."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer.float()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.layer(*_cast(args, torch.float32), **_cast(kwargs, torch.float32))
        return _cast(out, torch.bfloat16)

    def __getattr__(self, name: str) -> Any:  # a parent may read the layer's attributes (e.g. darknet's out_shape)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("layer"), name)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with its floating-point tensors (also inside lists, tuples and dicts) in ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value) if type(value) in (list, tuple) else value
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    return value


@contextmanager
def _innermost_running(net: nn.Module) -> Iterator[list[str]]:
    """A stack of the qualified names of the modules of ``net`` whose forward is running; after an
    exception its top is the module that raised (forward hooks do not run on the way out)."""
    stack: list[str] = []

    def leave(module: nn.Module, args: Any, out: Any) -> None:  # a hook that returned a value would replace the output
        stack.pop()

    handles = []
    for name, module in net.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: stack.append(n)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def run_unsupported_in_fp32(net: nn.Module, example: torch.Tensor) -> list[str]:
    """Wrap, in place, each module of the bf16 ``net`` that fails on ``example`` for want of a bf16
    kernel in an :class:`Fp32Island`; returns their names. A failure in ``net``'s own forward (no
    module to wrap) raises a CnnlabError naming it. Any other failure ends the trial quietly: it is
    not this module's to report, and the network's first real call raises it as before (a net that
    only runs at a fixed batch, say)."""
    wrapped: list[str] = []
    while True:
        with _innermost_running(net) as stack, torch.inference_mode():
            try:
                net(example)
                return wrapped
            except (NotImplementedError, RuntimeError) as e:
                if _NOT_IN_BF16 not in str(e) or not stack:
                    return wrapped
                failing, error = stack[-1], str(e).splitlines()[0]
        if any(failing == w or failing.startswith(w + ".") for w in wrapped):
            return wrapped  # float32 already, so not for want of a bf16 kernel: left to the real call
        if failing == "":
            raise CnnlabError(f"this network cannot run in bfloat16 on this device ({error}, in its own forward); use --precision fp32")
        net.set_submodule(failing, Fp32Island(net.get_submodule(failing)))
        wrapped.append(failing)
