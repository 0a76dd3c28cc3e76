"""Winograd 3×3 convolutions: equal to conv2d (in float64) within their rounding for every tile,
padding, size, activation and the residual add; correct with several threads at once; only the
convolutions they compute are eligible; the engine keeps the packed conv unless Winograd is faster."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.engine import kernel_choice, packed_conv, winograd
from cnnlab.engine.packed_conv import PackedConv2d, pack_convolutions, packing_available
from cnnlab.engine.winograd import WinogradConv2d

ACTIVATIONS = {"none": ([], lambda y: y), "relu": ([], F.relu), "leaky_relu": ([0.1], lambda y: F.leaky_relu(y, 0.1))}


def _exact(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=conv.padding)


@pytest.mark.parametrize("tile", winograd.TILES)
@pytest.mark.parametrize("attr", list(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(3, 5, 7, 9, 1), (16, 8, 13, 10, 0), (4, 4, 6, 5, 2), (32, 48, 28, 28, 1)])
def test_equals_conv2d_within_its_rounding(tile: int, attr: str, shape: tuple[int, ...]) -> None:
    c, o, h, w, pad = shape
    g = torch.Generator().manual_seed(tile * 100 + h)
    conv = nn.Conv2d(c, o, 3, padding=pad)
    x = torch.randn(2, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    scalars, act = ACTIVATIONS[attr]
    with torch.inference_mode():
        got = WinogradConv2d(conv, tile, attr, scalars)(x)
        want = act(_exact(conv, x))
    assert got.shape == want.shape and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last)  # what the next packed conv reads
    assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


@pytest.mark.parametrize("tile", winograd.TILES)
def test_add_relu_adds_the_residual_before_the_relu(tile: int) -> None:
    g = torch.Generator().manual_seed(tile)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(1, 8, 11, 11, generator=g).contiguous(memory_format=torch.channels_last)
    other = torch.randn(1, 8, 11, 11, generator=g).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = WinogradConv2d(conv, tile).add_relu(x, other)
        want = F.relu(_exact(conv, x) + other.double())
    assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


def test_threads_running_layers_at_once_each_get_their_own_result() -> None:
    """Scratch space is reused between calls: two threads (engine streams) must not share it."""
    g = torch.Generator().manual_seed(0)
    layers = [WinogradConv2d(nn.Conv2d(16, 16, 3, padding=1), 4), WinogradConv2d(nn.Conv2d(16, 24, 3, padding=1), 2)]
    inputs = [torch.randn(1, 16, s, s, generator=g).contiguous(memory_format=torch.channels_last) for s in (30, 18)]
    with torch.inference_mode():
        want = [m(x).clone() for m, x in zip(layers, inputs)]
    bad: list[int] = []

    def run(i: int) -> None:
        with torch.inference_mode():
            for _ in range(40):
                if not torch.equal(layers[i](inputs[i]), want[i]):
                    bad.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_runs_under_no_grad_after_inference_mode_in_the_same_thread() -> None:
    """The scratch buffers a first call made under inference_mode (as the engine's timing runs) must
    still be writable when a library user then calls the layer under no_grad."""
    layer = WinogradConv2d(nn.Conv2d(4, 4, 3, padding=1), 2)
    x = torch.randn(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        first = layer(x).clone()
    with torch.no_grad():
        assert torch.equal(layer(x), first)


def test_only_float32_3x3_stride1_plain_convs_are_eligible() -> None:
    assert winograd.eligible(nn.Conv2d(4, 4, 3, padding=1))
    assert winograd.eligible(nn.Conv2d(4, 4, 3, padding=0))
    assert not winograd.eligible(nn.Conv2d(4, 4, 3, stride=2, padding=1))
    assert not winograd.eligible(nn.Conv2d(4, 4, 3, padding=1, dilation=2))
    assert not winograd.eligible(nn.Conv2d(4, 4, 3, padding=1, groups=2))
    assert not winograd.eligible(nn.Conv2d(4, 4, 5, padding=2))
    assert not winograd.eligible(nn.Conv2d(4, 4, 3, padding=3))
    assert not winograd.eligible(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    assert not winograd.eligible(nn.Conv2d(4, 4, 3, padding=1).to(torch.bfloat16))


@pytest.mark.skipif(not packing_available(), reason="needs oneDNN's packed convolutions")
def test_packing_keeps_the_packed_conv_unless_winograd_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    net = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1)).eval()
    x = torch.randn(1, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = net(x)
    seen: list[dict[str, float]] = []

    def pick(seconds: dict[str, float], handicaps: dict[str, float]) -> str:
        seen.append(handicaps)
        return "winograd4"

    monkeypatch.setattr(kernel_choice, "choose", pick)
    packed = net.to(memory_format=torch.channels_last)
    pack_convolutions(packed, (1, 8, 16, 16), winograd_too=True)
    assert isinstance(packed[0], WinogradConv2d) and packed[0].tile == 4
    assert isinstance(packed[2], PackedConv2d)  # stride 2: never a candidate
    margin = packed_conv.MARGIN
    assert seen == [{"winograd2": margin, "winograd4": margin}]  # Winograd must win by the margin
    with torch.inference_mode():
        assert torch.allclose(packed(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not packing_available(), reason="needs oneDNN's packed convolutions")
@pytest.mark.parametrize(("threads", "batch", "offered"), [(1, 1, True), (2, 1, False), (2, 8, True)])
def test_winograd_is_offered_only_where_layers_run_on_one_thread(
    threads: int, batch: int, offered: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single images run each layer on every thread; batches on two threads run as two one-thread streams."""
    from cnnlab.engine.inference import InferenceOptions, prepare

    timed: list[int] = []

    def record(model: nn.Module, x: torch.Tensor, layers: list) -> list[dict[str, float]]:
        timed.append(torch.get_num_threads())
        return [{name: 1.0 for name in layer.candidates} for layer in layers]

    monkeypatch.setattr(kernel_choice, "network_timings", record)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        prepare(net, (3, 12, 12), torch.device("cpu"), InferenceOptions(batch=batch))
    finally:
        torch.set_num_threads(before)
    assert timed == ([1] if offered else [])  # and timed on the one thread each layer will have
