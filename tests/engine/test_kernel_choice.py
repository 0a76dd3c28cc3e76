"""The per-layer kernel choice is timed inside whole forwards of the network: each layer's own time
is read under each candidate, a recurring layer shape is decided once on the sum of its layers, and
a candidate carrying a handicap must win by it."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from cnnlab.engine import kernel_choice
from cnnlab.engine.kernel_choice import Layer


class _Slow(nn.Module):
    """Identity that takes ``seconds``; counts its calls."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.calls = seconds, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(self.seconds)
        return x


def _net_and_layers(costs: list[dict[str, float]], keys: list[str]) -> tuple[nn.Sequential, list[Layer]]:
    """A Sequential of slow identities between two slow non-candidates; layer i's candidates take costs[i]."""
    net = nn.Sequential(_Slow(0.004), *[_Slow(0.0) for _ in costs], _Slow(0.004))
    layers = []
    for i, (cost, key) in enumerate(zip(costs, keys)):
        candidates = {name: _Slow(s) for name, s in cost.items()}
        net[i + 1] = candidates["packed"]
        layers.append(Layer(net, str(i + 1), key, candidates))
    return net, layers


def test_each_layer_is_timed_on_its_own_under_every_candidate() -> None:
    net, layers = _net_and_layers([{"packed": 0.002, "fast": 0.0}, {"packed": 0.006}], ["a", "b"])
    seconds = kernel_choice.network_timings(net, torch.zeros(1), layers)
    assert set(seconds[0]) == {"packed", "fast"} and set(seconds[1]) == {"packed"}
    # a layer's own sleep, not its neighbours' 4 ms (bounds wide for a busy machine; best of RUNS)
    assert 0.002 <= seconds[0]["packed"] < 0.0059 and seconds[0]["fast"] < 0.0039
    assert 0.006 <= seconds[1]["packed"] < 0.0099
    # every candidate ran in whole forwards: one untimed and RUNS timed ones
    assert layers[0].candidates["fast"].calls == 1 + kernel_choice.RUNS
    assert layers[1].candidates["packed"].calls == 2 * (1 + kernel_choice.RUNS)  # it stood in while "fast" was timed


def test_a_recurring_shape_is_decided_once_on_the_sum_of_its_layers() -> None:
    costs = [{"packed": 0.003, "other": 0.002}, {"packed": 0.001, "other": 0.006}, {"packed": 0.004, "other": 0.001}]
    net, layers = _net_and_layers(costs, ["same", "same", "alone"])
    picks = kernel_choice.choose_kernels(net, torch.zeros(1), layers, handicaps={})
    assert picks == {"same": "packed", "alone": "other"}  # "same": 4 ms packed against 8 ms
    assert net[1] is layers[0].candidates["packed"] and net[2] is layers[1].candidates["packed"]
    assert net[3] is layers[2].candidates["other"]


def test_a_handicapped_candidate_must_win_by_its_handicap() -> None:
    assert kernel_choice.choose({"packed": 1.0, "w": 0.95}, {"w": 1.1}) == "packed"
    assert kernel_choice.choose({"packed": 1.0, "w": 0.85}, {"w": 1.1}) == "w"
    assert kernel_choice.choose({"packed": 1.0, "w": 0.95}, {}) == "w"


class _OnlyPairs(nn.Module):
    """A network that runs only on batches of two (a fixed reshape)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.reshape(2, 3, 6, 6))


def test_a_network_that_cannot_run_one_image_keeps_the_packed_convs() -> None:
    from cnnlab.engine.packed_conv import PackedConv2d, pack_convolutions, packing_available
    from cnnlab.threads import one_thread

    if not packing_available():
        pytest.skip("needs oneDNN's packed convolutions")
    net = _OnlyPairs().eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = net(x)
    with one_thread():
        pack_convolutions(net, (2, 3, 6, 6), winograd_too=True)
    assert isinstance(net.conv, PackedConv2d)
    with torch.inference_mode():
        assert torch.allclose(net(x), want, rtol=1e-4, atol=1e-5)


class _Logged(nn.Module):
    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.name)
        return x


def test_the_candidates_take_turns_forward_by_forward() -> None:
    """A burst of load from elsewhere then slows every candidate alike, not the one being timed."""
    log: list[str] = []
    net = nn.Sequential(nn.Identity())
    layer = Layer(net, "0", "k", {"packed": _Logged("packed", log), "winograd2": _Logged("winograd2", log)})
    kernel_choice.network_timings(net, torch.zeros(1), [layer])
    assert log == ["packed", "winograd2"] * (1 + kernel_choice.RUNS)
