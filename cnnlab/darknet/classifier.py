"""A darknet classifier cfg as a cnnlab model, so ``cnnlab train/valid/predict/summary`` take it.

``create_model("darknet:PATH.cfg", num_classes=N)`` builds :class:`DarknetClassifier`. It follows the
:class:`~cnnlab.models.Classifier` contract: ``forward`` returns log-probabilities (darknet's
softmax output, in log space — see :meth:`DarknetNet.forward_log_probs`), ``meta.classifier`` names
the last weighted layer, and ``reset_classifier`` rewrites that layer's ``filters=``/``output=``.

The cfg *text* travels in ``meta.extra["builder_kwargs"]`` and from there into every checkpoint's
``arch``, so a checkpoint rebuilds the network without the cfg file.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from cnnlab.darknet.cfg import read_cfg
from cnnlab.darknet.layers import Connected, Convolutional
from cnnlab.darknet.model import DarknetNet, darknet_preprocess
from cnnlab.errors import CnnlabError
from cnnlab.model_meta import Preprocess
from cnnlab.models._base import Classifier, ModelMeta, Stage

PREFIX = "darknet:"
# layers that may follow the classifier layer: they keep (or pool) its channels, so its filters= is
# the number of classes
_AFTER_CLASSIFIER = {"avg", "softmax", "cost", "dropout", "activation", "batchnorm", "max", "local_avgpool"}


def classifier_index(net: DarknetNet) -> int:
    """Index of the layer whose ``filters=``/``output=`` is the number of classes."""
    for i in range(len(net.layers) - 1, -1, -1):
        layer = net.layers[i]
        if isinstance(layer, (Convolutional, Connected)):
            return i
        if layer.kind not in _AFTER_CLASSIFIER:
            break
    raise CnnlabError(
        f"{net.source}: cannot tell which layer is the classifier (expected a [convolutional] or [connected] "
        "followed only by avgpool/softmax/cost/dropout)"
    )


def cfg_with_classes(net: DarknetNet, num_classes: int) -> str:
    """The cfg text with the classifier layer's ``filters=`` (or ``output=``) set to ``num_classes``;
    only that line changes, so comments and line numbers in error messages stay."""
    k = classifier_index(net)
    sec = net.sections[k + 1]
    key = "output" if isinstance(net.layers[k], Connected) else "filters"
    lines = net.cfg_text.split("\n")  # numbered as parse_cfg numbers them (at "\n" only)
    if key in sec.option_lines:
        lines[sec.option_lines[key] - 1] = f"{key}={num_classes}"
    else:
        lines.insert(sec.line, f"{key}={num_classes}")  # right after the [section] header
    return "\n".join(lines)



def darknet_meta(net: DarknetNet, source: str, flavor: str, preprocess: Preprocess, head: int) -> ModelMeta:
    """The engine's metadata for a darknet network: name, input, first conv, head layer ``head``, and
    what rebuilds it from a checkpoint (the cfg text and flavor)."""
    first = next((f"net.layers.{i}.conv" for i, l in enumerate(net.layers) if isinstance(l, Convolutional)), "net.layers.0")
    return ModelMeta(name=PREFIX + source, preprocess=preprocess, first_conv=first, classifier=f"net.layers.{head}",
                     paper="darknet cfg", extra={"builder_kwargs": {"cfg_text": net.cfg_text, "flavor": flavor}})  # fmt: skip

class DarknetClassifier(Classifier):
    def __init__(
        self,
        cfg_text: str,
        flavor: str = "pjreddie",
        source: str = "<cfg>",
        num_classes: int | None = None,
        in_chans: int | None = None,
    ) -> None:
        super().__init__()
        net = DarknetNet(cfg_text, flavor, source)
        if net.is_detector:
            raise CnnlabError(
                f"{source} is a detector ([yolo]/[region]): train it with `cnnlab train --task detect --model darknet:CFG`, "
                "run it with `cnnlab darknet detector test` (a classifier is what this takes: convert, --task classify)"
            )
        if in_chans is not None and in_chans != net.channels:
            raise CnnlabError(f"{source} takes {net.channels}-channel input ([net] channels=); edit the cfg for {in_chans}")
        if num_classes is not None and num_classes != net.num_outputs:
            k = classifier_index(net)
            print(f"note: {source}: layer {k} [{net.sections[k + 1].type}] gets {num_classes} outputs "
                  f"(the cfg has {net.num_outputs}) to match {num_classes} classes", file=sys.stderr)
            net = DarknetNet(cfg_with_classes(net, num_classes), flavor, source)
            if net.num_outputs != num_classes:
                raise CnnlabError(
                    f"{source}: setting the classifier layer to {num_classes} outputs gives a network with "
                    f"{net.num_outputs}; edit the cfg so its last layer has {num_classes} outputs"
                )
        self.net = net
        self.num_classes = net.num_outputs
        self.meta = darknet_meta(net, source, flavor, darknet_preprocess(net), classifier_index(net))

    @property
    def flavor(self) -> str:
        return self.net.flavor

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1] → (N, classes) log-probs
        return self.net.forward_log_probs(x)

    def _split(self) -> int:
        k = classifier_index(self.net)
        for j in range(k, len(self.net.layers)):
            if any(r < k - 1 for r in self.net.layers[j].refs):
                raise CnnlabError(f"{self.net.source}: a layer after the classifier reads an earlier layer; no features/head split")
        return k

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the layer before the classifier layer."""
        return self.net.forward_all(x, upto=self._split())[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return x.flatten(1)
        k = self._split()
        outputs: list[torch.Tensor | None] = [None] * (k - 1) + [x]
        for layer in list(self.net.layers)[k : self.net.head_start()]:
            x = layer(x, outputs)
            outputs.append(x)
        return self.net.log_probs_from_logits(x.flatten(1))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        # e.g. `cnnlab train --resume` after the cfg file was edited: one line instead of a traceback
        try:
            return super().load_state_dict(state_dict, strict, assign)
        except RuntimeError as e:
            detail = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e).splitlines()[0])
            raise CnnlabError(
                f"these weights do not fit {self.net.source} ({detail}); was the cfg edited after they were saved?"
            ) from None

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier layer with ``num_classes`` outputs; the rest is kept."""
        param = next(self.parameters())
        new = DarknetClassifier(self.net.cfg_text, self.flavor, self.net.source, num_classes).to(param.device, param.dtype)
        prefix = self.meta.classifier + "."
        keep = {k: v for k, v in self.state_dict().items() if not k.startswith(prefix)}
        new.load_state_dict(keep, strict=False)
        self.net, self.meta, self.num_classes = new.net, new.meta, new.num_classes

    def layer_table(self) -> str:
        return self.net.layer_table()

    def stages(self) -> list[Stage]:
        """Every layer before the classifier layer, parameterless ones included, so that ``--freeze N``
        counts layers as darknet numbers them (as ``darknet partial CFG WEIGHTS OUT N`` does)."""
        k = classifier_index(self.net)
        return [(f"{i} {layer.kind}", [f"net.layers.{i}"]) for i, layer in enumerate(list(self.net.layers)[:k])]

    def frozen_by_design(self) -> int:
        """darknet stops the backward pass at a layer with ``stopbackward=1``: it and every layer before
        it get no gradient (the last such layer counts)."""
        k = classifier_index(self.net)
        marked = [i for i, sec in enumerate(self.net.sections[1 : k + 1]) if sec.int("stopbackward", 0)]
        return marked[-1] + 1 if marked else 0


def create_darknet_classifier(
    name: str, num_classes: int | None = None, in_chans: int | None = None, cfg_text: str | None = None, flavor: str = "pjreddie"
) -> DarknetClassifier:
    """``name`` is ``darknet:PATH.cfg``; ``cfg_text`` (from a checkpoint) wins over reading PATH."""
    path = name[len(PREFIX) :] if name.startswith(PREFIX) else ""
    if cfg_text is None:
        if not path:
            raise CnnlabError("a darknet model needs its cfg: write --model darknet:PATH.cfg")
        _, cfg_text = read_cfg(path)
    return DarknetClassifier(cfg_text, flavor, path or "<cfg>", num_classes, in_chans)


def create_darknet_model(
    name: str, num_classes: int | None = None, in_chans: int | None = None, cfg_text: str | None = None, flavor: str = "pjreddie"
) -> nn.Module:
    """The model registry's builder for ``darknet:PATH.cfg``: a classifier cfg becomes a
    :class:`DarknetClassifier`; a detector cfg ([yolo]/[region]) a
    :class:`~cnnlab.darknet.detector_model.DarknetDetector`."""
    if cfg_text is None and name.startswith(PREFIX):
        _, cfg_text = read_cfg(name[len(PREFIX) :])
    if cfg_text is not None and DarknetNet(cfg_text, flavor, name[len(PREFIX) :] or "<cfg>").is_detector:
        from cnnlab.darknet.detector_model import DarknetDetector

        net = DarknetNet(cfg_text, flavor, name[len(PREFIX) :] or "<cfg>")
        if num_classes is not None and num_classes != net.classes:
            raise CnnlabError(f"{name} detects {net.classes} classes ([yolo]/[region] classes=) but the data has {num_classes}; edit the cfg")
        if in_chans is not None and in_chans != net.channels:
            raise CnnlabError(f"{name} takes {net.channels}-channel input ([net] channels=); edit the cfg for {in_chans}")
        return DarknetDetector(cfg_text, flavor, net.source)
    return create_darknet_classifier(name, num_classes, in_chans, cfg_text, flavor)


def classifier_from_net(net: DarknetNet) -> DarknetClassifier:
    """Wrap an already loaded network (e.g. with .weights read) without copying its cfg from disk."""
    model = DarknetClassifier(net.cfg_text, net.flavor, net.source)
    model.net = net
    return model
