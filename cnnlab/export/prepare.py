"""From a PyTorch model to what every exporter writes: the folded, wrapped graph and its metadata."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnlab.export.fold import fold_batchnorm
from cnnlab.export.graph import ExportGraph, example_input
from cnnlab.export.metadata import build_metadata
from cnnlab.model_meta import Preprocess

INPUT_NAME = "images"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Prepared:
    graph: ExportGraph  # eval mode, BatchNorm folded, optional uint8 stage
    example: torch.Tensor  # (B, C, H, W) traced with: B=2 for a dynamic batch, else the static size
    output_names: list[str]
    metadata: dict[str, str]


def darknet_net(model: nn.Module):
    """The :class:`DarknetNet` inside ``model`` (itself, or a classifier/detector wrapper), else None."""
    from cnnlab.darknet.model import DarknetNet

    if isinstance(model, DarknetNet):
        return model
    inner = getattr(model, "net", None)
    return inner if isinstance(inner, DarknetNet) else None


def _output_names(model: nn.Module) -> tuple[list[str], list[dict] | None]:
    from cnnlab.darknet.classifier import DarknetClassifier
    from cnnlab.export.yolo_decode import head_specs

    net = darknet_net(model)
    if net is not None and net.is_detector:
        heads = head_specs(net)
        return [f"head{i}" for i in range(len(heads))], heads
    if isinstance(model, DarknetClassifier):
        return ["log_probs"], None
    return ["probs" if net is not None else "logits"], None  # a bare DarknetNet classifier ends in its softmax


def prepare(
    model: nn.Module,
    pre: Preprocess,
    *,
    classes: list[str] | None = None,
    input_uint8: bool = False,
    precision: str = "fp32",
    name: str | None = None,
    extra_metadata: dict[str, str] | None = None,
    batch: int = 2,
) -> Prepared:
    """Fold BatchNorm (on a copy), wrap, and describe ``model`` for export; ``batch``: the example's
    (a static-batch export's size; 2 for a dynamic one). ``extra_metadata`` with ``task: embedding``
    (an embedding run's network) names the output ``embedding``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    outputs, heads = _output_names(model)
    if (extra_metadata or {}).get("task") == "embedding":
        outputs = ["embedding"]
    folded, n_folded = fold_batchnorm(model)
    # no gradients: layers that train differently (darknet heads pass gradients by hand) trace as they infer
    graph = ExportGraph(folded, pre, input_uint8, PRECISIONS[precision]).eval().requires_grad_(False)
    n_classes = heads[-1]["classes"] if heads else getattr(model, "num_classes", 0)
    classes = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
    net = darknet_net(model)
    fallback = f"darknet:{net.source}" if net is not None else type(model).__name__
    meta_name = name or getattr(getattr(model, "meta", None), "name", fallback)
    metadata = build_metadata(meta_name, classes, pre, outputs, input_uint8=input_uint8, precision=precision, bn_folded=n_folded, heads=heads)
    metadata |= {"batch": "dynamic"} | (extra_metadata or {})  # a static batch's writer records its size
    return Prepared(graph, example_input(pre, input_uint8, batch), outputs, metadata)


def temp_beside(path: Path, suffix: str = "") -> Path:
    """A hidden temporary name in ``path``'s folder: written there, then renamed over ``path``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")

