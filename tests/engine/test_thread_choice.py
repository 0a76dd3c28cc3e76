"""A one-image forward runs on all of torch's threads or on one, whichever timed faster; the choice is
cached, and the engine applies it to one-image calls only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.engine import thread_choice
from cnnlab.engine.kernel_cache import Choices
from cnnlab.engine.inference import InferenceOptions, prepare
from cnnlab.engine.thread_choice import LONG, MARGIN, choice_key, faster_count, one_image_threads


def _timer(per_count: dict[int, float]):
    calls: list[int] = []

    def seconds_at(n: int) -> float:
        calls.append(n)
        return per_count[n]

    return seconds_at, calls


@pytest.mark.parametrize(("one", "two", "expected"), [(0.003, 0.004, 1), (0.004, 0.003, 2), (0.004 * (1 - MARGIN / 2), 0.004, 2)])
def test_one_thread_is_kept_only_when_faster_by_the_margin(one: float, two: float, expected: int) -> None:
    seconds_at, calls = _timer({1: one, 2: two})
    assert faster_count(seconds_at, 2) == expected
    assert calls.count(1) == calls.count(2)  # the counts take turns


def test_a_long_forward_keeps_every_thread_untimed() -> None:
    seconds_at, calls = _timer({1: 0.1, 4: 2 * LONG})
    assert faster_count(seconds_at, 4) == 4
    assert calls == [4]


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_choice_is_timed_once_then_read_from_the_cache(two_threads, monkeypatch: pytest.MonkeyPatch) -> None:
    net, x = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), torch.zeros(1, 1, 8, 8)
    timed: list[int] = []
    monkeypatch.setattr(thread_choice, "_forward_seconds", lambda run, ex, n: timed.append(n) or (0.001 if n == 1 else 0.002))
    assert one_image_threads(net, net, x) == 1
    assert timed
    timed.clear()
    assert one_image_threads(net, net, x) == 1
    assert timed == []  # read, not timed
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # spinning threads: another choice to make
    assert choice_key(net, x, 2) != choice_key(net, x, 4)
    one_image_threads(net, net, x)
    assert timed


SEEN: list[int] = []  # module-level: the engine runs a deep copy of the net


class _Probe(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SEEN.append(torch.get_num_threads())
        return x


def test_the_engine_runs_one_image_on_the_chosen_count_and_restores_torchs(two_threads) -> None:
    engine = prepare(nn.Sequential(nn.Conv2d(1, 4, 3), _Probe()).eval(), (1, 8, 8), torch.device("cpu"), InferenceOptions())
    assert engine.one_image_threads in (1, 2)
    engine.one_image_threads = 1
    SEEN.clear()
    engine(torch.zeros(1, 1, 8, 8))
    assert SEEN == [1] and torch.get_num_threads() == 2
    engine.one_image_threads = 2
    SEEN.clear()
    engine(torch.zeros(1, 1, 8, 8))
    assert SEEN == [2]


def test_a_batch_engine_times_nothing(two_threads, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(thread_choice, "faster_count", lambda *a, **k: pytest.fail("timed"))
    engine = prepare(nn.Conv2d(1, 4, 3).eval(), (1, 8, 8), torch.device("cpu"), InferenceOptions(batch=8))
    assert engine.one_image_threads is None


class _FullBatchOnly(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(4, *x.shape[1:])  # only a batch of 4 fits


def test_a_net_that_cannot_run_one_image_keeps_every_thread_and_caches_nothing(two_threads) -> None:
    net, x = _FullBatchOnly(), torch.zeros(1, 1, 8, 8)
    assert one_image_threads(net, net, x) == 2
    assert Choices().get(choice_key(net, x, 2)) is None
