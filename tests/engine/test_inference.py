"""The inference engine on zoo models (outputs equal to the eager model's, the model left alone, bf16
refused where the CPU lacks it), the prefetching behind it, and ``cnnlab predict`` over a list with
unreadable images."""

from __future__ import annotations

import io
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.engine import inference
from cnnlab.engine.fold import fold_batchnorm
from cnnlab.engine.inference import InferenceOptions, prepare
from cnnlab.engine.prefetch import batched, prefetch
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model

CPU = torch.device("cpu")


def _with_bn_statistics(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("lenet5", 32)])
def test_engine_fp32_gives_the_eager_outputs_and_leaves_the_model_alone(name: str, size: int) -> None:
    model = _with_bn_statistics(create_model(name, num_classes=7, **({"in_chans": 3} if name == "lenet5" else {})))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)
    engine = prepare(model, (3, size, size), CPU, InferenceOptions(batch=3))
    np.testing.assert_allclose(engine(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(engine(x[:1]).numpy(), want[:1].numpy(), rtol=1e-4, atol=1e-5)  # another batch size
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_every_batchnorm_after_a_conv_is_folded_once() -> None:
    model = _with_bn_statistics(create_model("resnet18", num_classes=5))
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorm(model) == bns  # ResNet: every BN follows a conv
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_bf16_is_refused_where_the_cpu_lacks_it(monkeypatch) -> None:
    monkeypatch.setattr(inference, "bf16_supported", lambda device: False)
    model = create_model("lenet5", num_classes=3)
    with pytest.raises(CnnlabError, match="--precision bf16 needs native bfloat16"):
        prepare(model, (1, 32, 32), CPU, InferenceOptions(precision="bf16"))


def test_non_default_options_say_so_in_one_line() -> None:
    if not inference.bf16_supported(CPU):
        pytest.skip("this CPU has no native bf16")
    log = io.StringIO()
    engine = prepare(create_model("lenet5", num_classes=3), (1, 32, 32), CPU, InferenceOptions(precision="bf16"), log=log)
    assert log.getvalue() == "inference: torch bf16 (not the default torch fp32 path)\n"
    assert engine(torch.rand(2, 1, 32, 32)).dtype == torch.float32
    quiet = io.StringIO()
    prepare(create_model("lenet5", num_classes=3), (1, 32, 32), CPU, log=quiet)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("ahead", [True, False])
def test_prefetch_yields_every_item_once_in_order_with_errors_in_place(ahead: bool) -> None:
    rng = random.Random(0)

    def load(i: int) -> int:
        time.sleep(rng.random() * 0.002)
        if i % 7 == 3:
            raise ValueError(f"bad {i}")
        return i * i

    got = list(prefetch(range(50), load, depth=3, errors=(ValueError,), ahead=ahead))
    assert [g.item for g in got] == list(range(50))
    assert all((g.error is None and g.value == g.item**2) or (g.item % 7 == 3 and str(g.error) == f"bad {g.item}") for g in got)


def test_prefetch_reraises_other_errors_and_stops_its_thread_when_left_early() -> None:
    def items():
        yield 1
        raise RuntimeError("the list broke")

    with pytest.raises(RuntimeError, match="the list broke"):
        list(prefetch(items(), lambda i: i, ahead=True))
    before = threading.active_count()
    for g in prefetch(range(10_000), lambda i: i, depth=2, ahead=True):
        if g.item == 5:
            break
    time.sleep(0.5)
    assert threading.active_count() <= before
    assert [len(b) for b in batched(range(7), 3)] == [3, 3, 1]


def test_prefetch_loads_in_the_background_only_with_a_core_to_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    def where(ahead: bool | None) -> str:
        return next(iter(prefetch([0], lambda i: threading.current_thread().name, ahead=ahead))).value

    main = threading.current_thread().name
    assert where(False) == main and where(True) == "cnnlab-prefetch"
    monkeypatch.setattr("cnnlab.threads.cpus_available", lambda: torch.get_num_threads())
    assert where(None) == main  # the network's threads have every core
    monkeypatch.setattr("cnnlab.threads.cpus_available", lambda: torch.get_num_threads() + 1)
    assert where(None) == "cnnlab-prefetch"


def test_predict_skips_counts_and_reports_unreadable_images_in_order(tmp_path: Path, cli) -> None:
    model = create_model("lenet5", num_classes=3)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    images = []
    for i in range(4):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(np.full((32, 32), 60 * i, np.uint8)).save(p)
        images.append(str(p))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    args = [images[0], str(tmp_path / "bad.png"), images[1], images[2], str(tmp_path / "gone.png"), images[3]]
    r = cli("predict", "--model", "lenet5", "--weights", tmp_path / "w.pt", "--labels", tmp_path / "labels.txt", *args)
    assert r.code == 1
    assert [line.split(": Predicted")[0] for line in r.out.splitlines() if "Predicted in" in line] == images
    assert "bad.png: skipped" in r.err and "gone.png: skipped" in r.err and "skipped 2 of 6 image(s)" in r.err
