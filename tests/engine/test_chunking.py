"""The inference engine's batch chunking (each image computed once, outputs in order, the fastest size
kept, on one stream or several) and its strided max pools (equal to torch's on unpadded shapes; darknet's
padded [maxpool] through them is checked against the real darknet's outputs in tests/darknet)."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.engine import chunking
from cnnlab.engine.chunking import BatchRunner, Chunker
from cnnlab.engine.inference import InferenceOptions, prepare
from cnnlab.engine.strided_pool import StridedMaxPool2d, strided_max_pool, use_strided_pools
from cnnlab.models import create_model

CPU = torch.device("cpu")


class _Recorder:
    """A ``run`` that returns (rows, 2) per image and a list for detector-like outputs, and records chunk sizes."""

    def __init__(self, as_list: bool = False) -> None:
        self.sizes: list[int] = []
        self.as_list = as_list

    def __call__(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.sizes.append(x.shape[0])
        out = torch.stack([x[:, 0, 0, 0], x[:, 0, 0, 0] * 2], dim=1)
        return [out, out + 1] if self.as_list else out


@pytest.mark.parametrize("as_list, streams", [(False, 1), (True, 1), (False, 2), (True, 3)])
def test_chunks_cover_every_image_once_in_order(as_list: bool, streams: int) -> None:
    runner, run = BatchRunner(streams), _Recorder(as_list)
    for n in (32, 32, 7, 32, 32, 32, 32, 32, 32, 32):
        x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous() + 100
        out = runner(run, x)
        parts = out if as_list else [out]
        assert torch.equal(parts[0][:, 0], x[:, 0, 0, 0])
        if as_list:
            assert torch.equal(parts[1], parts[0] + 1)
    assert sum(run.sizes) == 32 * 9 + 7
    assert runner.chunker.size in (1, 2, 4, 8, 16, 32)


def test_streams_run_single_threaded_in_inference_mode() -> None:
    seen: list[tuple[int, bool, str]] = []

    def run(x: torch.Tensor) -> torch.Tensor:
        seen.append((torch.get_num_threads(), torch.is_inference_mode_enabled(), threading.current_thread().name))
        return x.flatten(1)

    before = torch.get_num_threads()
    BatchRunner(streams=2)(run, torch.zeros(8, 1, 1, 1))
    assert len(seen) > 1 and all(n == 1 and inference and name.startswith("cnnlab-stream") for n, inference, name in seen)
    assert torch.get_num_threads() == before  # the caller's threads are left as they were


def test_every_power_of_two_is_timed_then_the_fastest_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # fake clock: a chunk of s images takes cost[s] * s seconds, so 4 is the fastest per image
    cost = {1: 5.0, 2: 3.0, 4: 1.0, 8: 2.0, 16: 4.0}
    now = [0.0]
    monkeypatch.setattr(chunking.time, "perf_counter", lambda: now[0])

    def run(x: torch.Tensor) -> torch.Tensor:
        now[0] += cost[x.shape[0]] * x.shape[0] if x.shape[0] in cost else 100.0
        return x.flatten(1)

    runner = BatchRunner(streams=1)
    x = torch.zeros(16, 1, 1, 1)
    calls = 0
    while runner.chunker.size is None:
        runner(run, x)
        calls += 1
        assert calls < 20
    chunker: Chunker = runner.chunker
    assert chunker.size == 4
    assert sorted(chunker.times) == [1, 2, 4, 8, 16]
    assert all(len(t) == chunking.SAMPLES for t in chunker.times.values())
    sizes: list[int] = []
    runner(lambda x: sizes.append(x.shape[0]) or x.flatten(1), x)
    assert sizes == [4, 4, 4, 4]


@pytest.mark.parametrize("threads", [1, 2])
def test_engine_outputs_do_not_depend_on_the_chunk_size_or_streams(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("resnet18", num_classes=5).eval()
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)  # streams follow the caller's threads
    engine = prepare(model, (3, 32, 32), CPU, InferenceOptions(batch=8))
    assert engine.batches is not None and engine.batches.streams == threads and engine.batches.threads_per_stream == 1
    with torch.no_grad():
        want = model(x)
    for _ in range(12):  # through the exploration and after it
        np.testing.assert_allclose(engine(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    assert engine.batches is not None and engine.batches.chunker.size in (1, 2, 4, 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_strided_max_pool_equals_torch(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    for (k, s), (h, w), channels_last in itertools.product([((2, 2), (2, 2)), ((2, 2), (1, 1)), ((3, 3), (2, 2)), ((3, 2), (1, 2))], [(9, 9), (8, 13), (3, 3)], [True, False]):  # fmt: skip
        x = torch.randn(2, 5, h, w, generator=g).to(dtype)
        x[0, 1, 1, 1] = float("nan")
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        want = F.max_pool2d(x, k, s)
        got = strided_max_pool(x, k, s)
        assert got.shape == want.shape and torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got.nan_to_num(), want.nan_to_num()), (k, s, h, w)


def test_streams_follow_threads_and_batch() -> None:
    assert (BatchRunner.for_threads(2, 32).streams, BatchRunner.for_threads(2, 32).threads_per_stream) == (2, 1)
    assert (BatchRunner.for_threads(64, 32).streams, BatchRunner.for_threads(64, 32).threads_per_stream) == (32, 2)
    assert BatchRunner.for_threads(8, 1).streams == 1  # darknet's stdin loop: one image at a time


def test_only_unpadded_pools_are_swapped() -> None:
    net = torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.MaxPool2d(3, 2, padding=1), torch.nn.MaxPool2d(2, ceil_mode=True))
    assert use_strided_pools(net) == 1
    assert type(net[0]) is StridedMaxPool2d and type(net[1]) is torch.nn.MaxPool2d and type(net[2]) is torch.nn.MaxPool2d
    assert net[0].size == (2, 2) and net[0].stride == (2, 2)
