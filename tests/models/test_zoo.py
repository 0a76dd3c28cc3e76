"""Every registered model: parameter count as documented, a forward at its input size, a backward
that reaches every parameter, the fine-tuning contract, and a summary table.

The model fixture is module-scoped and parametrised, so pytest runs all tests of one model together
and builds each (up to 144 M parameters) once.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.models import Classifier, create_model, list_models
from cnnlab.models.layers import aux_loss
from cnnlab.models.summary import summarize

DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"


@pytest.fixture(scope="module", params=list_models())
def model(request: pytest.FixtureRequest) -> Classifier:
    torch.manual_seed(0)
    return create_model(request.param)


def _input(m: Classifier, batch: int) -> torch.Tensor:
    return torch.randn(batch, *m.meta.preprocess.input_size)


def test_preprocessing_table_in_docs_matches_meta() -> None:
    text = DOCS.read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\d+)×(\d+)×(\d+) \| (\d+) \| [^|]+\| [^|]+\| (\w+) \|$", text, re.MULTILINE)
    assert sorted(r[0] for r in rows) == list_models()
    for name, c, h, w, resize, interpolation in rows:
        with torch.device("meta"):  # only the metadata is needed
            p = create_model(name).meta.preprocess
        assert (p.input_size, p.resize, p.interpolation) == ((int(c), int(h), int(w)), int(resize), interpolation), name


def test_every_model_is_documented(documented_counts: dict[str, int]) -> None:
    assert sorted(documented_counts) == list_models()


def test_parameter_count_matches_docs(model: Classifier, documented_counts: dict[str, int]) -> None:
    assert sum(p.numel() for p in model.parameters()) == documented_counts[model.meta.name]


def test_meta_names_real_layers(model: Classifier) -> None:
    first = model.get_submodule(model.meta.first_conv)
    assert isinstance(first, nn.Conv2d)
    assert first.in_channels == model.meta.preprocess.channels
    p = model.meta.preprocess
    assert len(p.mean) == len(p.std) == p.channels
    assert p.resize >= p.input_size[1] or p.input_size[1:] == (32, 32)  # LeNet pads 28×28 digits to 32×32
    assert p.interpolation in ("bilinear", "bicubic", "nearest")


def test_forward_and_contract(model: Classifier) -> None:
    model.eval()
    x = _input(model, 1)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        pre = model.forward_head(feats, pre_logits=True)
        assert logits.shape == (1, model.num_classes)
        assert torch.isfinite(logits).all()
        assert pre.ndim == 2 and pre.shape[0] == 1
        original = model.num_classes
        model.reset_classifier(7)
        assert model.forward_head(feats).shape == (1, 7) and model.num_classes == 7
        model.reset_classifier(original)


def test_backward_reaches_every_parameter(model: Classifier) -> None:
    model.train()
    # Batch 1 keeps this cheap; auxiliary heads end in batch norm on a 1×1 map, which needs two.
    batch = 2 if model.meta.extra.get("aux_classifiers") else 1
    model.zero_grad()
    x, y = _input(model, batch), torch.tensor([0, 1][:batch])
    criterion = nn.CrossEntropyLoss()
    loss = criterion(model(x), y) + aux_loss(model, criterion, y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    model.zero_grad(set_to_none=True)


def test_summary_covers_the_model(model: Classifier, documented_counts: dict[str, int]) -> None:
    s = summarize(model, model.meta.preprocess.input_size)
    assert s.params == documented_counts[model.meta.name]
    assert s.rows[0].kind == "conv" and s.rows[-1].kind == "softmax"
    assert s.rows[-1].out_shape == (model.num_classes,)
    # Every convolution outside the auxiliary heads (which eval skips) is a row.
    aux_heads = tuple(name.rpartition(".")[0] + "." for name in model.meta.extra.get("aux_classifiers", []))
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and not n.startswith(aux_heads or ("\0",))]
    assert sum(r.kind == "conv" for r in s.rows) >= len(convs)  # (custom convs such as LeNet C3 add rows)
    assert s.macs > 0
    assert len(s.table().splitlines()) == len(s.rows) + 3
