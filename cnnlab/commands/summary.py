"""``cnnlab summary MODEL [--input CxHxW]``: the darknet-style layer table of a model."""

from __future__ import annotations

import argparse
import re

from cnnlab.errors import CnnlabError

NAME = "summary"
HELP = "print a model's layers (darknet-style), BFLOPs, parameters and multiply-adds"


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``"3x224x224"`` (or with ``×`` / ``,``) → ``(3, 224, 224)``."""
    parts = re.split(r"\s*[x×X,]\s*", text.strip())
    if len(parts) != 3 or not all(p.isdecimal() and int(p) > 0 for p in parts):
        raise CnnlabError(f"--input {text!r} is not C×H×W; write it like 3x224x224")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered model name (see `cnnlab models`), or darknet:PATH.cfg")
    p.add_argument("--input", metavar="CxHxW", help="input size; default: the model's own, e.g. 3x224x224")


def run(args: argparse.Namespace) -> int:
    from cnnlab.models import create_model

    size = parse_input_size(args.input) if args.input else None
    model = create_model(args.model, **({"in_chans": size[0]} if size else {}))
    if hasattr(model, "layer_table"):  # a darknet cfg: the table darknet itself prints
        return _darknet_summary(args.model, model, size)
    size = size or model.meta.preprocess.input_size
    print(f"{args.model}: input {'x'.join(map(str, size))}")
    print(_zoo_table(args.model, model, size))
    return 0


def _zoo_table(name: str, model, size: tuple[int, int, int]) -> str:
    from cnnlab.models.summary import summarize

    try:
        return summarize(model, size).table()
    except RuntimeError as e:  # e.g. a map shrinking below a kernel at a too-small input
        first = str(e).strip().splitlines()[0]
        raise CnnlabError(
            f"{name} cannot take a {'x'.join(map(str, size))} input ({first}); "
            f"try its own size {'x'.join(map(str, model.meta.preprocess.input_size))}"
        ) from None


def _darknet_summary(name: str, model, size: tuple[int, int, int] | None) -> int:
    """A darknet cfg: the layer table darknet itself prints, then the totals."""
    net = getattr(model, "net", model)  # DarknetClassifier wraps its DarknetNet; a detector is one
    own = (net.channels, net.height, net.width)
    if size is not None and size != own:
        raise CnnlabError(f"a darknet cfg sets its own input size ({'x'.join(map(str, own))}, [net] channels/height/width); edit the cfg instead of --input")
    table = net.layer_table()
    bflops = sum(float(line.split()[-2]) for line in table.splitlines() if line.endswith("BFLOPs"))
    params = sum(p.numel() for p in net.parameters())
    print(f"{name}: input {'x'.join(map(str, own))}, {'detector' if net.is_detector else f'{net.classes} outputs'}")
    print(table)
    print(f"Total BFLOPS {bflops:.3f}")
    print(f"parameters {params:,}")
    return 0
