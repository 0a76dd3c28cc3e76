"""``--backend onnxruntime|openvino`` through the inference engine: the exported graph gives the torch
path's outputs, its cache is keyed by the weights (a checkpoint holds EMA and raw weights), a damaged
cached file is exported again, and options a backend cannot run are refused before anything is said."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch

from cnnlab.engine.backends import _cache_path
from cnnlab.engine.inference import InferenceOptions, prepare
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model

SHAPE = (1, 32, 32)


def _lenet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("lenet5", num_classes=10).eval()


def _engine(model: torch.nn.Module, backend: str, key: Path, log: io.StringIO | None = None):
    return prepare(model, SHAPE, torch.device("cpu"), InferenceOptions(backend=backend), cache_key=str(key), log=log or io.StringIO())


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backend_outputs_equal_the_torch_path(tmp_path: Path, backend: str) -> None:
    key = tmp_path / "best.pt"
    key.write_bytes(b"stands in for the checkpoint the graph is cached beside")
    model, x = _lenet(0), torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(1))
    want = prepare(model, SHAPE, torch.device("cpu"))(x)
    got = _engine(model, backend, key)(x)
    assert (got - want).abs().max().item() < 1e-4
    assert len(list(tmp_path.glob("best.pt.*.onnx"))) == 1  # cached beside the file


def test_the_cache_tells_two_weight_sets_of_one_file_apart(tmp_path: Path) -> None:
    key = tmp_path / "best.pt"
    key.write_bytes(b"one checkpoint, EMA and raw weights")
    ema, raw = _lenet(0), _lenet(1)
    assert _cache_path(ema, str(key)) != _cache_path(raw, str(key))
    assert _cache_path(ema, str(key)) == _cache_path(_lenet(0), str(key))
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(2))
    first, second = _engine(ema, "onnxruntime", key)(x), _engine(raw, "onnxruntime", key)(x)
    assert (second - prepare(raw, SHAPE, torch.device("cpu"))(x)).abs().max().item() < 1e-4
    assert not torch.allclose(first, second)


@pytest.mark.parametrize(("backend", "suffix"), [("onnxruntime", ".onnx"), ("openvino", ".onnx"), ("openvino", ".xml")])
def test_a_damaged_cached_graph_is_exported_again(backend: str, suffix: str, tmp_path: Path, capfd) -> None:
    key = tmp_path / "best.pt"
    key.write_bytes(b"checkpoint")
    model, x = _lenet(0), torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    cached = _cache_path(model, str(key)).with_suffix(suffix)
    if suffix == ".xml":
        _engine(model, backend, key)  # the whole cache (.onnx, .xml, .bin), then its .xml damaged
    cached.write_bytes(b"half a file")
    got = _engine(model, backend, key)(x)
    assert (got - prepare(model, SHAPE, torch.device("cpu"))(x)).abs().max().item() < 1e-4
    assert cached.stat().st_size > 1000
    assert "tensorflow" not in capfd.readouterr().err.lower()  # OpenVINO's other parsers tried the damaged file and logged it


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_cached_file_holding_another_graph_is_exported_again(backend: str, tmp_path: Path) -> None:
    """A file copied over the cache (or left by another version) is not run in place of these weights."""
    key = tmp_path / "best.pt"
    key.write_bytes(b"checkpoint")
    model, other, x = _lenet(0), _lenet(1), torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    _engine(other, backend, key)
    for theirs in tmp_path.glob("best.pt.*"):
        theirs.rename(_cache_path(model, str(key)).with_suffix(theirs.suffix))
    got = _engine(model, backend, key)(x)
    assert (got - prepare(model, SHAPE, torch.device("cpu"))(x)).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (InferenceOptions(backend="onnxruntime", precision="bf16"), "--backend onnxruntime runs fp32 only"),
        (InferenceOptions(backend="openvino", compile=True), "--compile (torch.compile) applies to --backend torch"),
    ],
)
def test_what_a_backend_cannot_run_is_refused_before_anything_is_printed(options: InferenceOptions, says: str) -> None:
    log = io.StringIO()
    with pytest.raises(CnnlabError, match=re.escape(says)):
        prepare(_lenet(0), SHAPE, torch.device("cpu"), options, log=log)
    assert log.getvalue() == ""


def test_a_read_only_source_folder_caches_in_this_users_cache(tmp_path: Path, monkeypatch) -> None:
    """Not in a temp folder every user shares (a second user could not write there, and would load
    whatever the first left)."""
    from cnnlab.engine import backends

    key = tmp_path / "ro" / "best.pt"
    key.parent.mkdir()
    key.write_bytes(b"checkpoint")
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setattr(backends.os, "access", lambda path, mode: Path(path) != key.parent)
    assert _cache_path(_lenet(0), str(key)).parent == tmp_path / "mine" / "exports"
