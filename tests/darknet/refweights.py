"""Deterministic pseudo-random ``.weights`` for the reference nets, made by cnnlab's own darknet code.

The darknet oracle (``shared/darknet``) ran the real darknet on weights from its ``make_weights.py``
(numpy only). That script is not part of cnnlab, so this module makes the same bytes from cnnlab's
own pieces: the network cnnlab builds from the cfg says which layers own parameters, their shapes
and the order of their blocks in the file (``DarknetLayer.blocks``), and ``save_weights`` writes
them. Only the recipe for the numbers is the oracle's, restated here:

* ``numpy.random.RandomState(seed)`` (a frozen stream), seed ``crc32(cfg file name) & 0x7fffffff``.
* Layers in cfg order; for each layer that owns parameters the draws come in this order, whatever
  the order of the blocks in the file:
  1. weights ~ N(0, gain/√fan_in), gain √2 except for linear, logistic and tanh activations (1); the
     last layer that owns parameters has its std multiplied by the cfg's ``final_gain``;
  2. biases ~ N(0, 0.1); for a conv without batch norm right before a [yolo]/[region] layer, each
     entry of a box is offset (w and h −1, objectness −2, classes −1) so a few boxes survive;
  3. batch norm: variance U(0.5, 2), scale U(0.7, 1.3)·√variance, mean N(0, 0.2), then about 6 % of
     channels get a tiny variance 10^U(−4, −3) with a matching scale, to expose BN-epsilon mistakes;
  4. AlexeyAB [shortcut] weights U(0.5, 1.5).
* Header version 0.``minor``.0 with ``seen`` = 0: 8 bytes when minor ≥ 2, else 4 (tiny.cfg uses
  minor 1, the 32-bit ``seen`` variant).

The fixture in ``conftest.py`` checks every file against the oracle's ``SHA256SUMS`` (kept in
``reference/weights.sha256``), so any difference from ``make_weights.py`` fails loudly.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from cnnlab.darknet.layers import (
    BatchNorm,
    Connected,
    Convolutional,
    DarknetLayer,
    Local,
    Region,
    Shortcut,
    Yolo,
)
from cnnlab.darknet.model import DarknetNet, load_darknet
from cnnlab.darknet.weights import WeightsHeader, save_weights

# The oracle's per-cfg knobs: the last layer's gain (logits neither flat nor saturated), the header
# minor version, and the flavor whose layer shapes the cfg needs (route groups are AlexeyAB's).
KNOBS: dict[str, dict] = {
    "darknet.cfg": {"final_gain": 2.6},
    "tiny.cfg": {"minor": 1, "final_gain": 2.8},
    "resnet18.cfg": {"final_gain": 0.7},
    "resnet50.cfg": {"final_gain": 0.14},
    "oracle-mini-pj.cfg": {"final_gain": 2.0},
    "yolov2-tiny.cfg": {"final_gain": 2.0},
    "yolov4-tiny.cfg": {"flavor": "alexeyab"},
}

_UNIT_GAIN = ("linear", "logistic", "tanh")


def _block_names(layer: DarknetLayer) -> list[str]:
    """The names of ``layer.blocks()`` in file order."""
    if isinstance(layer, Convolutional):
        if not layer.blocks():
            return []  # dontload=1
        return ["biases", "scales", "mean", "variance", "weights"] if layer.bn is not None else ["biases", "weights"]
    if isinstance(layer, Connected):
        return ["biases", "weights", "scales", "mean", "variance"] if layer.bn is not None else ["biases", "weights"]
    if isinstance(layer, Local):
        return ["biases", "weights"]
    if isinstance(layer, BatchNorm):
        return ["scales", "mean", "variance"]
    if isinstance(layer, Shortcut) and layer.weight is not None:
        return ["weights"]
    if layer.blocks():
        raise NotImplementedError(f"no weights recipe for [{layer.kind}]")
    return []


def _fan_in(layer: DarknetLayer) -> int:
    if isinstance(layer, Convolutional):
        return layer.conv.weight[0].numel()  # c/groups · size · size
    if isinstance(layer, Connected):
        return layer.fc.in_features
    assert isinstance(layer, Local)
    return layer.weight.shape[-1]  # c · size · size


def _head_offsets(net: DarknetNet, i: int, n: int) -> np.ndarray:
    """Bias offsets of a conv feeding a [yolo]/[region] layer: per box entry x, y, w, h, obj, classes."""
    sec = net.sections[i + 2]  # sections[0] is [net]; layer i + 1 is the detection layer
    classes, coords = sec.int("classes", 20), sec.int("coords", 4)
    entry = np.arange(n) % (classes + coords + 1)
    off = np.zeros(n)
    off[(entry == 2) | (entry == 3)] = -1.0
    off[entry == coords] = -2.0
    off[entry > coords] = -1.0
    return off


def _layer_values(net: DarknetNet, i: int, rs: np.random.RandomState, gain: float) -> dict[str, np.ndarray]:
    layer = net.layers[i]
    names = _block_names(layer)
    sizes = dict(zip(names, (t.numel() for t in layer.blocks())))
    vals: dict[str, np.ndarray] = {}
    if "weights" in names and not isinstance(layer, Shortcut):
        std = (np.sqrt(2.0) if layer.act_name not in _UNIT_GAIN else 1.0) / np.sqrt(max(1, _fan_in(layer))) * gain
        vals["weights"] = rs.normal(0.0, std, size=sizes["weights"])
        b = rs.normal(0.0, 0.1, size=sizes["biases"])
        head = i + 1 < len(net.layers) and isinstance(net.layers[i + 1], (Yolo, Region))
        if head and "scales" not in names:
            b = b + _head_offsets(net, i, sizes["biases"])
        vals["biases"] = b
    if "scales" in names:
        m = sizes["scales"]
        var = rs.uniform(0.5, 2.0, size=m)
        scales = rs.uniform(0.7, 1.3, size=m) * np.sqrt(var)
        vals["mean"] = rs.normal(0.0, 0.2, size=m)
        small = rs.uniform(size=m) < 0.06
        tiny_var = 10.0 ** rs.uniform(-4, -3, size=m)
        vals["variance"] = np.where(small, tiny_var, var)
        vals["scales"] = np.where(small, np.sqrt(tiny_var) * rs.uniform(0.7, 1.3, size=m), scales)
    if isinstance(layer, Shortcut) and names:
        vals["weights"] = rs.uniform(0.5, 1.5, size=sizes["weights"])
    return vals


def reference_net(cfg: str | Path) -> DarknetNet:
    """The oracle's network for ``cfg``: its flavor, and every parameter block filled by the recipe."""
    name = Path(cfg).name
    knobs = KNOBS.get(name, {})
    net = load_darknet(cfg, None, knobs.get("flavor", "pjreddie"))
    rs = np.random.RandomState(zlib.crc32(name.encode()) & 0x7FFFFFFF)
    owners = [i for i, layer in enumerate(net.layers) if _block_names(layer)]
    with torch.no_grad():
        for i in owners:
            gain = knobs.get("final_gain", 1.0) if i == owners[-1] else 1.0
            vals = _layer_values(net, i, rs, gain)
            layer = net.layers[i]
            for block, tensor in zip(_block_names(layer), layer.blocks()):
                flat = np.asarray(vals[block], dtype="<f4")  # float64 → float32 as the oracle casts
                tensor.copy_(torch.from_numpy(flat).view(tensor.shape))
    minor = knobs.get("minor", 2)
    net.header = WeightsHeader(0, minor, 0, 0, 8 if minor >= 2 else 4)
    return net


def write_reference_weights(cfg: str | Path, out: str | Path) -> Path:
    """``make_weights.py CFG OUT`` with cnnlab's code; returns ``out``."""
    net = reference_net(cfg)
    save_weights(net, out)
    return Path(out)
