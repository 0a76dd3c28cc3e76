"""The engine's per-layer kernel choice is timed once per machine and read back on later runs; a
damaged or unwritable cache only means timing again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.engine import kernel_cache, kernel_choice
from cnnlab.engine.packed_conv import PackedConv2d, pack_convolutions, packing_available
from cnnlab.engine.winograd import WinogradConv2d

pytestmark = pytest.mark.skipif(not packing_available(), reason="needs oneDNN's packed convolutions")


def _pack() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).eval()
    net = net.to(memory_format=torch.channels_last)
    pack_convolutions(net, (1, 4, 10, 10), winograd_too=True)
    return net


@pytest.fixture
def timings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Decisions taken on timings, one per layer shape: how many candidates each had (each answers F(4×4))."""
    calls: list[int] = []

    def choose(seconds: dict[str, float], handicaps: dict[str, float]) -> str:
        calls.append(len(seconds))
        return "winograd4"

    monkeypatch.setattr(kernel_choice, "choose", choose)
    return calls


def test_the_second_run_reads_the_first_runs_choice(timings: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    first = _pack()
    assert timings == [3, 3] and all(isinstance(first[i], WinogradConv2d) for i in (0, 2))
    entries = json.loads(kernel_cache.cache_file().read_text())
    assert sorted(entries.values()) == ["winograd4", "winograd4"]
    monkeypatch.setattr(kernel_choice, "network_timings", lambda *a, **k: pytest.fail("timed again"))
    second = _pack()
    assert all(isinstance(second[i], WinogradConv2d) and second[i].tile == 4 for i in (0, 2))


def test_a_cache_for_other_shapes_or_candidates_is_not_used(timings: list[int]) -> None:
    names = ["packed", "winograd2", "winograd4"]
    earlier = kernel_cache.Choices()
    earlier.add(kernel_cache.layer_key(nn.Conv2d(4, 8, 3, padding=1), (1, 4, 10, 10), "none", names), "packed")
    earlier.add(kernel_cache.layer_key(nn.Conv2d(8, 8, 3, padding=1), (1, 8, 10, 10), "none", ["packed"]), "packed")
    earlier.save()
    net = _pack()
    assert isinstance(net[0], PackedConv2d) and isinstance(net[2], WinogradConv2d)
    assert timings == [3]  # the second layer's entry was for other candidates: timed


@pytest.mark.parametrize("damage", ["not json {", "[1, 2]", '{"k": 5}'])
def test_a_damaged_cache_is_timed_again_and_rewritten(damage: str, timings: list[int]) -> None:
    path = kernel_cache.cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(damage)
    _pack()
    assert timings == [3, 3]
    assert len(json.loads(path.read_text())) >= 2


def test_an_unwritable_cache_still_packs(timings: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be made
    net = _pack()
    assert isinstance(net[0], WinogradConv2d)
    assert not list(tmp_path.glob("**/*.tmp"))
