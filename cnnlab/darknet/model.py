"""A darknet ``.cfg`` as a PyTorch ``nn.Module`` (:class:`DarknetNet`) and :func:`load_darknet`.

The module is rebuilt from the cfg text alone (``DarknetNet(cfg_text, flavor)``), so a checkpoint
only needs ``{"cfg_text", "flavor", "state_dict"}``; the ``.weights`` header travels in the
state_dict as extra state so that save → checkpoint → save stays byte-identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.darknet.cfg import Section, parse_cfg, read_cfg
from cnnlab.darknet.cfg_keys import warn_unknown_options
from cnnlab.darknet.layers import LAYERS, BuildContext, DarknetLayer, Region, Softmax, Yolo
from cnnlab.darknet.weights import WeightsHeader, load_weights, save_weights
from cnnlab.errors import CnnlabError
from cnnlab.model_meta import Preprocess

FLAVORS = ("pjreddie", "alexeyab")


class DarknetNet(nn.Module):
    """Darknet network. ``forward(x)`` with x (N, C, H, W) in [0, 1]:

    * classifier: the last layer's output flattened, (N, outputs);
    * detector: a list of the [yolo]/[region] outputs after their activations, each (N, C, H, W) in
      darknet's ``[anchor][entry][H][W]`` channel layout.
    """

    def __init__(self, cfg_text: str, flavor: str = "pjreddie", source: str = "<cfg>") -> None:
        super().__init__()
        if flavor not in FLAVORS:
            raise CnnlabError(f"unknown darknet flavor {flavor!r}; use one of {', '.join(FLAVORS)}")
        self.flavor = flavor
        self.cfg_text = cfg_text
        self.source = source
        self.sections: list[Section] = parse_cfg(cfg_text, source)
        net = self.sections[0]
        self.width = net.int("width", 0)
        self.height = net.int("height", 0)
        self.channels = net.int("channels", 0)
        if min(self.width, self.height, self.channels) <= 0:
            raise CnnlabError(f"{net.where()}: [net] needs positive width=, height= and channels= (got {self.width}, {self.height}, {self.channels})")
        self.net_options = net
        self.header = WeightsHeader()
        self.loaded_layers = 0
        layers: list[DarknetLayer] = []
        shapes: list[tuple[int, int, int]] = []
        shape = (self.channels, self.height, self.width)
        for i, sec in enumerate(self.sections[1:]):
            if sec.type not in LAYERS:
                raise CnnlabError(
                    f"{sec.where()}: unknown section [{sec.raw_type}]; supported: {', '.join(LAYERS.names())}"
                )
            ctx = BuildContext(flavor, i, shape, shapes, self.width, self.height, self.sections[1:])
            layer = LAYERS.get(sec.type)(sec, ctx)
            layers.append(layer)
            shapes.append(layer.out_shape)
            shape = layer.out_shape
        if not layers:
            raise CnnlabError(f"{source}: the cfg has a [net] section but no layers")
        self.layers = nn.ModuleList(layers)
        # outputs that later layers read (route/shortcut/...); the rest are dropped as we go
        self._keep = {j for layer in layers for j in layer.refs}
        self.detection_layers = [i for i, layer in enumerate(layers) if layer.is_detection]
        warn_unknown_options(self.sections)  # after the build: a cfg that does not build says so first

    # -- construction helpers -------------------------------------------------------------------

    @classmethod
    def from_cfg(cls, cfg: str | Path, flavor: str = "pjreddie") -> "DarknetNet":
        _, text = read_cfg(cfg)
        return cls(text, flavor, source=str(cfg))

    @property
    def is_detector(self) -> bool:
        return bool(self.detection_layers)

    @property
    def num_outputs(self) -> int:
        """darknet's ``net->outputs``: the size of the last (non-cost) layer's output."""
        for layer in reversed(self.layers):
            if layer.kind != "cost":
                return layer.outputs
        return self.layers[-1].outputs

    @property
    def classes(self) -> int:
        """Number of classes: a detector's head classes, else the classifier's outputs."""
        if self.is_detector:
            head = self.layers[self.detection_layers[-1]]
            assert isinstance(head, (Yolo, Region))
            return head.classes
        return self.num_outputs

    @property
    def has_softmax(self) -> bool:
        return any(isinstance(layer, Softmax) for layer in self.layers)

    # -- forward ----------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        dets: list[torch.Tensor] = []
        outputs: list[torch.Tensor | None] = []
        for i, layer in enumerate(self.layers):
            x = layer(x, outputs)
            outputs.append(x if i in self._keep else None)
            if layer.is_detection:
                dets.append(x)
        return dets if dets else x.flatten(1)  # (N, outputs)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier output before its trailing [softmax]/[cost] layers, (N, outputs): for training with
        ``cross_entropy`` (darknet's softmax+cost is the same loss). Needs a classifier."""
        if self.is_detector:
            raise CnnlabError("forward_logits is for classifiers; this cfg has [yolo]/[region] layers")
        end = self.head_start()
        outputs: list[torch.Tensor | None] = []
        for i, layer in enumerate(list(self.layers)[:end]):
            x = layer(x, outputs)
            outputs.append(x if i in self._keep else None)
        return x.flatten(1)

    def head_start(self) -> int:
        """Index of the first trailing [softmax]/[cost] layer (``len(layers)`` when there is none)."""
        end = len(self.layers)
        while end > 1 and self.layers[end - 1].kind in ("cost", "softmax"):
            end -= 1
        return end

    def forward_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier output as log-probabilities, (N, outputs): ``log`` of what :meth:`forward` returns,
        computed stably from the logits. With it cnnlab's ``cross_entropy`` is darknet's softmax + cost
        loss (softmax(log p) = p), and cnnlab's softmax at predict time gives back darknet's probabilities.
        Groups and temperature of the trailing [softmax] are kept; without a [softmax] the raw output is
        returned (cnnlab then treats it as logits)."""
        return self.log_probs_from_logits(self.forward_logits(x))

    def log_probs_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, outputs) logits → log of the trailing [softmax]'s output (the logits if there is none)."""
        soft = next((layer for layer in list(self.layers)[self.head_start() :] if isinstance(layer, Softmax)), None)
        if soft is None:
            return logits
        n = logits.shape[0]
        z = logits.reshape(n, soft.groups, -1) / soft.temperature  # (N, groups, outputs/groups)
        return torch.log_softmax(z, dim=-1).reshape(n, -1)

    def forward_all(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Every layer's output (for per-layer comparisons and ``partial``)."""
        outputs: list[torch.Tensor | None] = []
        for layer in list(self.layers)[:upto]:
            x = layer(x, outputs)
            outputs.append(x)
        return [t for t in outputs if t is not None]

    # -- weights ----------------------------------------------------------------------------------

    def load_weights(self, path: str | Path, allow_partial: bool = False, upto: int | None = None) -> WeightsHeader:
        return load_weights(self, path, allow_partial, upto)

    def save_weights(self, path: str | Path, upto: int | None = None, reset_seen: bool = False) -> None:
        """Write darknet ``.weights`` (layers ``[0, upto)``) in the header variant this net was loaded from."""
        header = self.header
        if reset_seen:
            header = WeightsHeader(header.major, header.minor, header.revision, 0, header.seen_bytes)
        save_weights(self, path, upto, header)

    def get_extra_state(self) -> Any:
        return {"header": self.header.to_dict(), "flavor": self.flavor}

    def set_extra_state(self, state: Any) -> None:
        self.header = WeightsHeader(**state["header"])

    # -- darknet's printouts ----------------------------------------------------------------------

    def layer_table(self) -> str:
        """The table darknet prints on stderr while parsing the cfg."""
        lines = _defaults_used(self.sections[0], _NET_DEFAULTS)
        lines.append("layer     filters    size              input                output")
        for i, layer in enumerate(self.layers):
            lines.append(f"{i:5d} {layer.describe(self.flavor)}")
            if layer.kind == "crop":  # parse_crop reads shift= after the layer printed its line
                lines += _defaults_used(self.sections[i + 1], [("shift", 0.0)])
        return "\n".join(lines)


# [net] options pjreddie reads with the non-quiet option_find_*, in its order; a missing one prints a note
_NET_DEFAULTS: list[tuple[str, int | float | str]] = [
    ("batch", 1),
    ("learning_rate", 0.001),
    ("momentum", 0.9),
    ("decay", 0.0001),
    ("subdivisions", 1),
    ("policy", "constant"),
    ("max_batches", 0),
]


def _defaults_used(sec: Section, keys: list[tuple[str, int | float | str]]) -> list[str]:
    """darknet's "key: Using default '...'" lines for options missing from ``sec``."""
    lines = []
    for key, default in keys:
        if not sec.has(key):
            shown = f"{default:f}" if isinstance(default, float) else str(default)
            lines.append(f"{key}: Using default '{shown}'")
    return lines


def load_darknet(
    cfg: str | Path,
    weights: str | Path | None = None,
    flavor: str = "pjreddie",
    allow_partial: bool = False,
) -> DarknetNet:
    """Build the network of ``cfg`` (a path, or cfg text containing a ``[net]`` section) and read ``weights``.

    The result is in eval mode (darknet's inference numerics); call ``.train()`` to train it.
    """
    text_given = isinstance(cfg, str) and "\n" in cfg and "[" in cfg
    model = DarknetNet(cfg, flavor) if text_given else DarknetNet.from_cfg(cfg, flavor)
    if weights is not None:
        model.load_weights(weights, allow_partial=allow_partial)
    return model.eval()


def rebuild_darknet(cfg_text: str, flavor: str, state_dict: dict[str, Any]) -> DarknetNet:
    """The inverse of saving ``{"cfg_text", "flavor", "state_dict"}`` in a checkpoint."""
    model = DarknetNet(cfg_text, flavor)
    model.load_state_dict(state_dict)
    return model.eval()


CHECKPOINT_FORMAT = "cnnlab-darknet/1"


def checkpoint_payload(model: DarknetNet) -> dict[str, Any]:
    """What a cnnlab checkpoint needs to hold to rebuild ``model`` (for ``convert`` and training)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "cfg_text": model.cfg_text,
        "flavor": model.flavor,
        "state_dict": model.state_dict(),
        "input_size": [model.channels, model.height, model.width],
        "classes": model.classes,
        "detector": model.is_detector,
        "preprocess": darknet_preprocess(model).to_dict(),
    }


def from_checkpoint_payload(payload: dict[str, Any]) -> DarknetNet:
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CnnlabError(f"not a darknet checkpoint payload (format {payload.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
    return rebuild_darknet(payload["cfg_text"], payload["flavor"], payload["state_dict"])


def darknet_preprocess(model: DarknetNet) -> Preprocess:
    """cnnlab's :class:`Preprocess` for this net, following the flavor's classifier path: pjreddie
    letterboxes into width×height (grey canvas, no crop); AlexeyAB resizes the short side to ``width``
    (even for the height) and centre-crops. Pixels x/255, no mean/std, as darknet. The geometry is
    darknet's; the resize kernel is torchvision's (:mod:`cnnlab.darknet.preprocess` has darknet's own
    kernel, which the ``cnnlab darknet`` commands use)."""
    c = model.channels
    mode = "letterbox" if model.flavor == "pjreddie" else "short"
    return Preprocess(
        input_size=(c, model.height, model.width), mean=(0.0,) * c, std=(1.0,) * c, resize=model.width, resize_mode=mode
    )
