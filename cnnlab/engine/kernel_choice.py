"""Which kernel each 3×3 convolution runs (packed oneDNN or Winograd), timed inside the network.

A layer timed on its own, called again and again, finds its weights in the caches; inside the
network they were evicted by the layers before it. That flatters the kernels with the larger
weights: Winograd's transformed filters are 1.8x (F(2×2)) and 4x (F(4×4)) the direct ones. Measured
on ResNet-18 at batch 1 (one thread, Intel Xeon, paired rounds): with the choices of the
isolated timing (F(2×2) for the 512-channel convs on 7×7) 29.2 ms a forward, with the packed conv
there 24.2, and with F(2×2) rather than F(4×4) on the 256-channel convs 22.8. So each candidate is
timed here on every undecided layer at once, in whole forwards of the network (the candidates taking
turns), with hooks reading each layer's own time; a layer shape that recurs is decided once, on the
sum of its layers' times.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

RUNS = 3  # timed forwards per candidate, after one untimed one (oneDNN builds its primitives there)


class Layer(NamedTuple):
    """A convolution still to be decided: where it sits (``setattr(owner, attr, kernel)``), its cache
    key, and its candidate kernels by name ("packed" first, the default)."""

    owner: nn.Module
    attr: str
    key: str
    candidates: dict[str, nn.Module]


def choose_kernels(model: nn.Module, example: torch.Tensor, layers: list[Layer], handicaps: dict[str, float]) -> dict[str, str]:
    """The fastest candidate's name per key (each time multiplied by its name's handicap); every
    layer is left on its key's choice. The caller sets the threads the layers will run on.
    A network that cannot run ``example`` (one that only takes its full batch) keeps every layer
    on "packed" and decides nothing."""
    try:
        seconds = network_timings(model, example, layers)
    except RuntimeError:
        for layer in layers:
            setattr(layer.owner, layer.attr, layer.candidates["packed"])
        return {}
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for layer, per_name in zip(layers, seconds):
        for name, s in per_name.items():
            totals[layer.key][name] += s
    picks = {key: choose(dict(per_name), handicaps) for key, per_name in totals.items()}
    for layer in layers:
        setattr(layer.owner, layer.attr, layer.candidates[picks[layer.key]])
    return picks


def choose(seconds: dict[str, float], handicaps: dict[str, float]) -> str:
    return min(seconds, key=lambda name: seconds[name] * handicaps.get(name, 1.0))


def network_timings(model: nn.Module, example: torch.Tensor, layers: list[Layer]) -> list[dict[str, float]]:
    """Per layer, its seconds (best of :data:`RUNS` forwards) under each of its candidates, with
    every layer that has that candidate running it (the rest on "packed"). The candidates take turns
    forward by forward, so a burst of load from elsewhere hits them alike (the choice is cached)."""
    names = list(dict.fromkeys(name for layer in layers for name in layer.candidates))
    seconds = [{name: float("inf") for name in layer.candidates} for layer in layers]
    with torch.inference_mode():
        for run in range(RUNS + 1):  # the first round untimed: oneDNN builds its primitives there
            for name in names:
                running = [layer.candidates.get(name, layer.candidates["packed"]) for layer in layers]
                for layer, kernel in zip(layers, running):
                    setattr(layer.owner, layer.attr, kernel)
                spent = _layer_times(model, example, running)
                for i, layer in enumerate(layers):
                    if run and name in layer.candidates:
                        seconds[i][name] = min(seconds[i][name], spent[i])
    return seconds


def _layer_times(model: nn.Module, example: torch.Tensor, kernels: list[nn.Module]) -> list[float]:
    """One forward of ``model``; each kernel's time in it (summed over its calls)."""
    spent = [0.0] * len(kernels)
    started = [0.0] * len(kernels)
    hooks = []
    for i, kernel in enumerate(kernels):
        hooks.append(kernel.register_forward_pre_hook(_stamp(started, i)))
        hooks.append(kernel.register_forward_hook(_add_elapsed(started, spent, i)))
    try:
        model(example)
    finally:
        for h in hooks:
            h.remove()
    return spent


def _stamp(started: list[float], i: int) -> Callable:
    def hook(_m: nn.Module, _args: tuple) -> None:
        started[i] = time.perf_counter()

    return hook


def _add_elapsed(started: list[float], spent: list[float], i: int) -> Callable:
    def hook(_m: nn.Module, _args: tuple, _out: object) -> None:
        spent[i] += time.perf_counter() - started[i]

    return hook
