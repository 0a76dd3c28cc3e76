"""One handler per darknet ``[section]``: builds an ``nn.Module`` that computes what darknet computes.

Each handler is registered in :data:`LAYERS` under the section name and receives the parsed
:class:`~cnnlab.darknet.cfg.Section` and a :class:`BuildContext` (input shape, earlier layers' shapes,
flavor). A layer's ``forward(x, outputs)`` takes the previous layer's output ``x`` (N, C, H, W) and the
list of earlier outputs (for route/shortcut), and returns (N, C, H, W); flat layers use H = W = 1.

``blocks(transpose)`` lists the tensors a layer owns in ``.weights`` file order (views into the
parameters), so reading and writing weights is one generic loop (see :mod:`cnnlab.darknet.weights`).
The quirks cited in comments are described in ``shared/darknet/README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.darknet.activations import ACTIVATIONS, Activation
from cnnlab.darknet.cfg import Section
from cnnlab.errors import CnnlabError
from cnnlab.registry import Registry

Shape = tuple[int, int, int]  # (C, H, W) of one sample


@dataclass
class BuildContext:
    flavor: str  # "pjreddie" | "alexeyab"
    index: int  # index of the layer being built
    in_shape: Shape  # output shape of the previous layer (or the network input)
    shapes: list[Shape]  # output shapes of layers 0..index-1
    net_w: int
    net_h: int
    sections: list[Section] = field(default_factory=list)  # layer sections, for look-ahead checks

    @property
    def alexeyab(self) -> bool:
        return self.flavor == "alexeyab"

    def layer_ref(self, sec: Section, key: str, value: int) -> int:
        """Absolute index of a ``from=``/``layers=`` reference (negative = relative)."""
        j = self.index + value if value < 0 else value
        if not 0 <= j < self.index:
            raise CnnlabError(
                f"{sec.where(key)}: [{sec.type}] {key}={value} points at layer {j}, "
                f"but only layers 0..{self.index - 1} come before layer {self.index}"
            )
        return j


class DarknetLayer(nn.Module):
    """Base class: a darknet layer with its output shape and weight blocks."""

    kind: str = "?"
    is_detection = False  # [yolo] / [region]

    def __init__(self, in_shape: Shape, out_shape: Shape) -> None:
        super().__init__()
        self.in_shape = in_shape
        self.out_shape = out_shape
        self.refs: list[int] = []  # earlier layers whose outputs this one reads

    @property
    def outputs(self) -> int:
        c, h, w = self.out_shape
        return c * h * w

    def blocks(self, transpose: bool = False) -> list[torch.Tensor]:
        return []

    def describe(self, flavor: str) -> str:
        """Darknet's line in the layer table (stderr), without the index column."""
        return self.kind

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        raise NotImplementedError


Handler = Callable[[Section, BuildContext], DarknetLayer]
LAYERS: Registry[Handler] = Registry("darknet layer")


def _activation(sec: Section, default: str) -> tuple[str, Activation]:
    name = sec.str("activation", default) or default
    if name not in ACTIVATIONS:
        raise CnnlabError(
            f"{sec.where('activation')}: unknown activation {name!r}; darknet knows {', '.join(ACTIVATIONS.names())}"
        )
    return name, ACTIVATIONS.get(name)


def darknet_init_(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: int, normal: bool = False) -> None:
    """The initial weights darknet gives a layer it trains from scratch (make_convolutional_layer,
    make_connected_layer, make_local_layer): ``scale·rand_uniform(-1, 1)`` with
    ``scale = sqrt(2 / fan_in)`` — ``scale·rand_normal()`` for pjreddie's convolutions — and biases 0
    (darknet callocs them). Not torch's default (uniform ±1/sqrt(fan_in), random biases): with batch
    norm the weights' scale sets the effective learning rate, so a from-scratch run trains as
    darknet's only from darknet's scale."""
    scale = math.sqrt(2.0 / fan_in)
    with torch.no_grad():
        if normal:
            weight.normal_(0.0, scale)
        else:
            weight.uniform_(-scale, scale)
        if bias is not None:
            bias.zero_()


def _shape_str(s: Shape) -> str:
    c, h, w = s
    return f"{w:4d} x{h:4d} x{c:4d}"


class DarknetBatchNorm(nn.Module):
    """Darknet's batch norm: ``weight`` = scales, ``bias`` = biases (beta), rolling mean/variance.

    Inference follows the flavor: pjreddie divides by ``sqrt(var) + 1e-6`` (blas.c normalize_cpu),
    AlexeyAB by ``sqrt(var + 1e-5)``. Training uses batch statistics with darknet's rolling update
    (0.99 old + 0.01 new).
    """

    def __init__(self, n: int, flavor: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))
        self.pjreddie = flavor == "pjreddie"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, ...) → same
        if self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, 0.01, 1e-5)
        if self.pjreddie:
            # batch_norm computes (x-m)/sqrt(v'+eps); v' = (sqrt(v)+1e-6)^2, eps = 0 gives pjreddie's form
            var = (self.running_var.sqrt() + 1e-6) ** 2
            return F.batch_norm(x, self.running_mean, var, self.weight, self.bias, False, 0.0, 0.0)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, 1e-5)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference BN as ``x·scale + shift`` (per channel), computed in float64 and cast back."""
        var = self.running_var.double()
        den = var.sqrt() + 1e-6 if self.pjreddie else (var + 1e-5).sqrt()
        scale = self.weight.double() / den
        shift = self.bias.double() - self.running_mean.double() * scale
        return scale.to(self.weight.dtype), shift.to(self.weight.dtype)

    def blocks(self) -> list[torch.Tensor]:
        # file order after the biases: scales, rolling mean, rolling variance
        return [self.weight.data, self.running_mean, self.running_var]


# --------------------------------------------------------------------------------------------
# parameterised layers


class Convolutional(DarknetLayer):
    kind = "conv"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        c, h, w = ctx.in_shape
        n = sec.int("filters", 1)
        size = sec.int("size", 1)
        stride = sec.int("stride", 1)
        sy = sec.int("stride_y", stride) if ctx.alexeyab else stride
        sx = sec.int("stride_x", stride) if ctx.alexeyab else stride
        dilation = sec.int("dilation", 1) if ctx.alexeyab else 1
        groups = max(1, sec.int("groups", 1))
        padding = sec.int("padding", 0)
        if sec.int("pad", 0):
            padding = size // 2  # darknet: pad=1 overrides padding= (parser.c)
        if c % groups or n % groups:
            raise CnnlabError(f"{sec.where('groups')}: groups={groups} must divide input channels {c} and filters={n}")
        if sec.int("flipped", 0) or sec.has("share_index") or sec.int("binary", 0) or sec.int("xnor", 0):
            raise CnnlabError(f"{sec.where()}: [convolutional] with flipped/share_index/binary/xnor is not supported")
        oh = (h + 2 * padding - dilation * (size - 1) - 1) // sy + 1
        ow = (w + 2 * padding - dilation * (size - 1) - 1) // sx + 1
        if oh <= 0 or ow <= 0:
            raise CnnlabError(f"{sec.where()}: [convolutional] input {w}x{h} is too small for size={size}")
        super().__init__(ctx.in_shape, (n, oh, ow))
        self.bn_enabled = bool(sec.int("batch_normalize", 0))
        self.conv = nn.Conv2d(c, n, size, (sy, sx), padding, dilation, groups, bias=not self.bn_enabled)
        self.bn = DarknetBatchNorm(n, ctx.flavor) if self.bn_enabled else None
        self.act_name, self.act = _activation(sec, "logistic")
        darknet_init_(self.conv.weight, self.conv.bias, size * size * c // groups, normal=not ctx.alexeyab)
        self.size, self.stride, self.groups = size, stride, groups
        self.dontload = bool(sec.int("dontload", 0))
        # pjreddie CPU quirk: a 1×1 conv skips im2col and reads the input as if it were already the
        # (c/groups)×(out_h·out_w) column matrix, ignoring stride and padding (convolutional_layer.c)
        self.pj_1x1 = not ctx.alexeyab and size == 1 and (sy, sx, padding) != (1, 1, 0)
        if self.pj_1x1 and (c // groups) * oh * ow > (c // groups) * h * w:
            raise CnnlabError(f"{sec.where()}: a 1x1 [convolutional] with padding={padding} reads past its input in pjreddie darknet")

    def _pj_1x1(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        n, g = x.shape[0], self.groups
        f, oh, ow = self.out_shape
        k = x.shape[1] // g
        cols = x.reshape(n, g, -1)[:, :, : k * oh * ow].reshape(n, g, k, oh * ow)  # (N, g, c/g, L)
        y = torch.einsum("gfk,ngkl->ngfl", w.reshape(g, f // g, k), cols).reshape(n, f, oh, ow)
        return y if b is None else y + b.reshape(1, -1, 1, 1)

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        if self.pj_1x1:
            y = self._pj_1x1(x, self.conv.weight, self.conv.bias)
            return self.act(self.bn(y) if self.bn is not None else y)
        if self.bn is not None and not self.training:
            # inference: fold BN into the conv (as AlexeyAB's fuse_conv_batchnorm), one pass fewer
            scale, shift = self.bn.affine()
            w = self.conv.weight * scale.reshape(-1, 1, 1, 1)
            c = self.conv
            return self.act(F.conv2d(x, w, shift, c.stride, c.padding, c.dilation, c.groups))  # (N, n, oh, ow)
        y = self.conv(x)  # (N, n, oh, ow)
        if self.bn is not None:
            y = self.bn(y)
        return self.act(y)

    def blocks(self, transpose: bool = False) -> list[torch.Tensor]:
        if self.dontload:
            return []
        if self.bn is not None:
            return [self.bn.bias.data, *self.bn.blocks(), self.conv.weight.data]
        return [self.conv.bias.data, self.conv.weight.data]

    def describe(self, flavor: str) -> str:
        c, h, w = self.in_shape
        n, oh, ow = self.out_shape
        bflops = 2.0 * n * self.size * self.size * c / self.groups * oh * ow / 1e9
        return (
            f"conv  {n:5d} {self.size:2d} x{self.size:2d} /{self.stride:2d}  {_shape_str(self.in_shape)}   ->  "
            f"{_shape_str(self.out_shape)}  {bflops:5.3f} BFLOPs"
        )


class Connected(DarknetLayer):
    kind = "connected"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        c, h, w = ctx.in_shape
        n = sec.int("output", 1)
        super().__init__(ctx.in_shape, (n, 1, 1))
        bn = bool(sec.int("batch_normalize", 0))
        # with BN darknet's biases act as the BN beta (forward_connected_layer skips add_bias)
        self.fc = nn.Linear(c * h * w, n, bias=not bn)
        darknet_init_(self.fc.weight, self.fc.bias, c * h * w)
        self.bn = DarknetBatchNorm(n, ctx.flavor) if bn else None
        self.act_name, self.act = _activation(sec, "logistic")

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        y = self.fc(x.flatten(1))  # (N, in) CHW-flattened → (N, out)
        if self.bn is not None:
            y = self.bn(y)
        return self.act(y)[:, :, None, None]

    def blocks(self, transpose: bool = False) -> list[torch.Tensor]:
        wt = self.fc.weight.data.t() if transpose else self.fc.weight.data  # transposed files store [in][out]
        if self.bn is None:
            return [self.fc.bias.data, wt]
        # file order: biases, weights, then scales/mean/variance (BN after the weights, unlike conv)
        return [self.bn.bias.data, wt, *self.bn.blocks()]

    def describe(self, flavor: str) -> str:
        return f"connected                            {self.fc.in_features:4d}  ->  {self.fc.out_features:4d}"


class Local(DarknetLayer):
    """Locally connected layer: a separate filter bank per output location (local_layer.c)."""

    kind = "local"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        c, h, w = ctx.in_shape
        n = sec.int("filters", 1)
        size = sec.int("size", 1)
        stride = sec.int("stride", 1)
        pad = sec.int("pad", 0)
        # local_out_height: darknet uses pad as a flag for the size but the raw value for im2col
        oh = (h - size) // stride + 1 if not pad else (h - 1) // stride + 1
        ow = (w - size) // stride + 1 if not pad else (w - 1) // stride + 1
        uh = (h + 2 * pad - size) // stride + 1
        uw = (w + 2 * pad - size) // stride + 1
        if (uh, uw) != (oh, ow):
            raise CnnlabError(f"{sec.where()}: [local] with size={size} pad={pad} is not supported (darknet reads out of bounds)")
        super().__init__(ctx.in_shape, (n, oh, ow))
        self.size, self.stride, self.pad = size, stride, pad
        locs = oh * ow
        k = c * size * size
        self.weight = nn.Parameter(torch.empty(locs, n, k))  # file order [loc][n][c·k·k]
        self.bias = nn.Parameter(torch.zeros(n, locs))  # file order [n][loc]
        darknet_init_(self.weight, self.bias, k)
        self.act_name, self.act = _activation(sec, "logistic")

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        cols = F.unfold(x, self.size, padding=self.pad, stride=self.stride)  # (N, c·k·k, L)
        y = torch.einsum("lnk,bkl->bnl", self.weight, cols) + self.bias  # (N, n, L)
        n, oh, ow = self.out_shape
        return self.act(y.reshape(-1, n, oh, ow))

    def blocks(self, transpose: bool = False) -> list[torch.Tensor]:
        return [self.bias.data, self.weight.data]

    def describe(self, flavor: str) -> str:
        c, h, w = self.in_shape
        n, oh, ow = self.out_shape
        return f"Local Layer: {h} x {w} x {c} image, {n} filters -> {oh} x {ow} x {n} image"


class BatchNorm(DarknetLayer):
    kind = "batchnorm"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        super().__init__(ctx.in_shape, ctx.in_shape)
        self.bn = DarknetBatchNorm(ctx.in_shape[0], ctx.flavor)
        self.bn.bias.requires_grad_(False)  # darknet never loads nor learns [batchnorm] biases

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        return self.bn(x)

    def blocks(self, transpose: bool = False) -> list[torch.Tensor]:
        return self.bn.blocks()

    def describe(self, flavor: str) -> str:
        c, h, w = self.in_shape
        return f"Batch Normalization Layer: {w} x {h} x {c} image"


# --------------------------------------------------------------------------------------------
# pooling and reshaping


class MaxPool(DarknetLayer):
    kind = "max"
    # the pooling of the padded input; the inference engine swaps in a faster equal one
    max_pool: Callable[..., torch.Tensor] = staticmethod(F.max_pool2d)

    def __init__(self, sec: Section, ctx: BuildContext, average: bool = False) -> None:
        c, h, w = ctx.in_shape
        stride = sec.int("stride", 1)
        sy = sec.int("stride_y", stride) if ctx.alexeyab else stride
        sx = sec.int("stride_x", stride) if ctx.alexeyab else stride
        size = sec.int("size", stride)
        padding = sec.int("padding", size - 1)  # parser.c: default size-1, offset -padding/2
        if ctx.alexeyab and sec.int("maxpool_depth", 0):
            raise CnnlabError(f"{sec.where('maxpool_depth')}: [maxpool] maxpool_depth=1 is not supported")
        oh = (h + padding - size) // sy + 1
        ow = (w + padding - size) // sx + 1
        super().__init__(ctx.in_shape, (c, oh, ow))
        self.size, self.sy, self.sx, self.average = size, sy, sx, average
        lo = padding // 2
        # explicit (left, right, top, bottom) padding so the windows start at -padding/2
        self.pads = (lo, (ow - 1) * sx + size - w - lo, lo, (oh - 1) * sy + size - h - lo)

    def _pad(self, x: torch.Tensor, value: float) -> torch.Tensor:
        if not any(self.pads):
            return x
        # negative padding crops, which F.pad supports
        return F.pad(x, self.pads, value=value)

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        k, s = (self.size, self.size), (self.sy, self.sx)
        if not self.average:
            return self.max_pool(self._pad(x, -math.inf), k, s)  # out-of-range counts as -inf
        # local_avgpool averages only the in-range pixels
        total = F.avg_pool2d(self._pad(x, 0.0), k, s, divisor_override=1)
        ones = self._pad(torch.ones_like(x[:1, :1]), 0.0)
        count = F.avg_pool2d(ones, k, s, divisor_override=1)
        return total / count

    def describe(self, flavor: str) -> str:
        return (
            f"{'avg' if self.average else 'max'}          {self.size} x {self.size} / {self.sx}  "
            f"{_shape_str(self.in_shape)}   ->  {_shape_str(self.out_shape)}"
        )


class AvgPool(DarknetLayer):
    """Darknet's [avgpool] is a global mean to 1×1."""

    kind = "avg"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        super().__init__(ctx.in_shape, (ctx.in_shape[0], 1, 1))

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)

    def describe(self, flavor: str) -> str:
        c, h, w = self.in_shape
        return f"avg                     {w:4d} x{h:4d} x{c:4d}   ->  {c:4d}"


class Crop(DarknetLayer):
    """Test-time [crop]: the centre crop, mapped to ``2x-1`` unless ``noadjust=1`` (crop_layer.c)."""

    kind = "crop"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        c, h, w = ctx.in_shape
        ch, cw = sec.int("crop_height", 1), sec.int("crop_width", 1)
        if ch > h or cw > w:
            raise CnnlabError(f"{sec.where()}: [crop] {cw}x{ch} is larger than its input {w}x{h}")
        super().__init__(ctx.in_shape, (c, ch, cw))
        self.dy, self.dx = (h - ch) // 2, (w - cw) // 2
        self.adjust = not sec.int("noadjust", 0)

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        _, ch, cw = self.out_shape
        y = x[:, :, self.dy : self.dy + ch, self.dx : self.dx + cw]
        return y * 2 - 1 if self.adjust else y

    def describe(self, flavor: str) -> str:
        c, h, w = self.in_shape
        _, ch, cw = self.out_shape
        return f"Crop Layer: {h} x {w} -> {ch} x {cw} x {c} image"


class Reorg(DarknetLayer):
    """Darknet's reorg, which is NOT pixel_unshuffle: forward calls reorg_cpu(..., forward=0)."""

    kind = "reorg"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        c, h, w = ctx.in_shape
        s = sec.int("stride", 1)
        self.s, self.reverse = s, bool(sec.int("reverse", 0))
        if self.reverse:
            if c % (s * s):
                raise CnnlabError(f"{sec.where()}: [reorg] reverse needs channels {c} divisible by stride²={s * s}")
            out = (c // (s * s), h * s, w * s)
        else:
            if c % (s * s) or h % s or w % s:
                raise CnnlabError(f"{sec.where()}: [reorg] stride={s} must divide {w}x{h} and channels² ({c})")
            out = (c * s * s, h // s, w // s)
        super().__init__(ctx.in_shape, out)

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        n = x.shape[0]
        c, h, w = self.in_shape
        s, oc = self.s, c // (self.s * self.s)
        if not self.reverse:
            # out[k, j, i] = in_flat viewed as (oc, h·s, w·s) at [k % oc, j·s + off//s, i·s + off%s], off = k // oc
            v = x.reshape(n, oc, h, s, w, s)  # (N, c2, j, dy, i, dx)
            y = v.permute(0, 3, 5, 1, 2, 4).reshape(n, c, h, w)  # (N, dy·dx·c2, j, i) flat
            return y.reshape(n, *self.out_shape)
        # reverse: the inverse scatter with the same index formula
        v = x.reshape(n, s, s, oc, h, w)  # (N, dy, dx, c2, j, i)
        y = v.permute(0, 3, 4, 1, 5, 2).reshape(n, oc, h * s, w * s)
        return y.reshape(n, *self.out_shape)

    def describe(self, flavor: str) -> str:
        return f"reorg              /{self.s:2d}  {_shape_str(self.in_shape)}   ->  {_shape_str(self.out_shape)}"


class Upsample(DarknetLayer):
    kind = "upsample"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        c, h, w = ctx.in_shape
        stride = sec.int("stride", 2)
        self.scale = sec.float("scale", 1.0)
        self.down = stride < 0
        self.s = -stride if self.down else stride
        out = (c, h // self.s, w // self.s) if self.down else (c, h * self.s, w * self.s)
        super().__init__(ctx.in_shape, out)

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        if self.down:
            # darknet's reverse upsample sums each stride×stride block (upsample_cpu forward=0)
            _, oh, ow = self.out_shape
            x = x[:, :, : oh * self.s, : ow * self.s]
            return F.avg_pool2d(x, self.s, divisor_override=1) * self.scale
        y = F.interpolate(x, scale_factor=self.s, mode="nearest")  # (N, C, H·s, W·s)
        return y * self.scale if self.scale != 1.0 else y

    def describe(self, flavor: str) -> str:
        word = "downsample" if self.down else "upsample"
        return f"{word}{' ' * (19 - len(word))}{self.s:2d}x  {_shape_str(self.in_shape)}   ->  {_shape_str(self.out_shape)}"


# --------------------------------------------------------------------------------------------
# element-wise and graph layers


class Dropout(DarknetLayer):
    """Identity at inference (darknet aliases the previous output); inverted dropout in training."""

    kind = "dropout"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        super().__init__(ctx.in_shape, ctx.in_shape)
        self.p = sec.float("probability", 0.5)

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        return F.dropout(x, self.p, self.training)

    def describe(self, flavor: str) -> str:
        n = self.outputs
        return f"dropout       p = {self.p:.2f}               {n:4d}  ->  {n:4d}"


class Softmax(DarknetLayer):
    """Softmax over ``groups`` contiguous chunks of the flat input, logits divided by ``temperature``."""

    kind = "softmax"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        super().__init__(ctx.in_shape, ctx.in_shape)
        self.groups = max(1, sec.int("groups", 1))
        self.temperature = sec.float("temperature", 1.0)
        if self.outputs % self.groups:
            raise CnnlabError(f"{sec.where('groups')}: [softmax] groups={self.groups} must divide its {self.outputs} inputs")
        if sec.has("tree"):
            raise CnnlabError(f"{sec.where('tree')}: [softmax] tree= (hierarchical softmax) is not supported")

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        n = x.shape[0]
        z = x.reshape(n, self.groups, -1) / self.temperature  # (N, groups, inputs/groups)
        return torch.softmax(z, dim=-1).reshape(x.shape)

    def describe(self, flavor: str) -> str:
        return f"softmax                                        {self.outputs:4d}"


class Cost(DarknetLayer):
    """At inference [cost] passes its input on: get_network_output skips cost layers."""

    kind = "cost"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        super().__init__(ctx.in_shape, ctx.in_shape)

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        return x

    def describe(self, flavor: str) -> str:
        return f"cost                                           {self.outputs:4d}"


class Normalization(DarknetLayer):
    """Darknet's LRN: ``x·(kappa + alpha·S)^-beta`` with its buggy running window sum.

    normalization_layer.c starts the window with channels [0, size/2) and then slides it, adding
    channel k+size/2 and removing k-(size-1)/2-1, so channel size/2 is never added. We reproduce
    that exactly with prefix sums: S(k) = P(min(size/2, C)) + P(min(k+size/2+1, C)) - P(min(size/2+1, C))
    - P(max(0, k-(size-1)/2)), where P(m) is the sum of squares of channels [0, m).
    """

    kind = "normalization"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        super().__init__(ctx.in_shape, ctx.in_shape)
        self.size = sec.int("size", 5)
        self.alpha = sec.float("alpha", 0.0001)
        self.beta = sec.float("beta", 0.75)
        self.kappa = sec.float("kappa", 1.0)
        c = ctx.in_shape[0]
        half, k = self.size // 2, torch.arange(c)
        self.register_buffer("i_add", torch.clamp(k + half + 1, max=c), persistent=False)
        self.register_buffer("i_sub", torch.clamp(k - (self.size - 1) // 2, min=0), persistent=False)
        self.base, self.base2 = min(half, c), min(half + 1, c)  # indices into P

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        sq = (x * x).double()  # (N, C, H, W); float64 so the prefix-sum differences stay exact enough
        p = F.pad(torch.cumsum(sq, dim=1), (0, 0, 0, 0, 1, 0))  # (N, C+1, H, W): P(0..C)
        s = p[:, self.base : self.base + 1] + p[:, self.i_add] - p[:, self.base2 : self.base2 + 1] - p[:, self.i_sub]
        norms = (self.kappa + self.alpha * s).to(x.dtype)
        return x * norms.pow(-self.beta)

    def describe(self, flavor: str) -> str:
        c, h, w = self.in_shape
        return f"Local Response Normalization Layer: {w} x {h} x {c} image, {self.size} size"


class Route(DarknetLayer):
    """Concatenate the listed layers' channels in order; AlexeyAB ``groups``/``group_id`` slice each input."""

    kind = "route"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        vals = sec.ints("layers")
        if not vals:
            raise CnnlabError(f"{sec.where()}: [route] needs layers=")
        refs = [ctx.layer_ref(sec, "layers", v) for v in vals]
        self.groups = max(1, sec.int("groups", 1)) if ctx.alexeyab else 1
        self.group_id = sec.int("group_id", 0) if ctx.alexeyab else 0
        c, h, w = ctx.shapes[refs[0]]
        total = 0
        for j in refs:
            cj, hj, wj = ctx.shapes[j]
            if (hj, wj) != (h, w):
                raise CnnlabError(
                    f"{sec.where('layers')}: [route] layer {j} is {wj}x{hj} but layer {refs[0]} is {w}x{h}; "
                    "routed layers must have the same width and height"
                )
            if cj % self.groups:
                raise CnnlabError(f"{sec.where('groups')}: [route] groups={self.groups} must divide layer {j}'s {cj} channels")
            total += cj // self.groups
        super().__init__(ctx.in_shape, (total, h, w))
        self.refs = refs

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        parts = []
        for j in self.refs:
            t = outputs[j]
            assert t is not None
            if self.groups > 1:
                k = t.shape[1] // self.groups
                t = t[:, self.group_id * k : (self.group_id + 1) * k]
            parts.append(t)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def describe(self, flavor: str) -> str:
        return "route " + "".join(f" {j}" for j in self.refs)


class Shortcut(DarknetLayer):
    """pjreddie: ``act(alpha·prev + beta·from)``; unequal shapes add only the overlap (blas.c shortcut_cpu).

    Where shapes differ, pjreddie strides over the larger map by the integer size ratio and leaves the
    rest of ``prev`` unchanged (not even scaled by alpha); resnet cfgs rely on this.
    AlexeyAB (shortcut_multilayer_cpu): ``prev + Σ from_i`` over one or more ``from`` layers, where an
    unequal ``from`` is added by flat index up to the smaller size, and optional learned
    ``weights_type=per_feature|per_channel`` weights (normalized by ``weights_normalization``).
    """

    kind = "res"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        froms = sec.ints("from")
        if not froms:
            raise CnnlabError(f"{sec.where()}: [shortcut] needs from=")
        wtype = sec.str("weights_type", "none") or "none"
        if not ctx.alexeyab and (len(froms) > 1 or wtype != "none"):
            raise CnnlabError(f"{sec.where()}: [shortcut] with several from= layers or weights_type is AlexeyAB-only; use --flavor alexeyab")
        super().__init__(ctx.in_shape, ctx.in_shape)
        self.refs = [ctx.layer_ref(sec, "from", f) for f in froms]
        self.alexeyab = ctx.alexeyab
        self.alpha = sec.float("alpha", 1.0) if not ctx.alexeyab else 1.0
        self.beta = sec.float("beta", 1.0) if not ctx.alexeyab else 1.0
        self.act_name, self.act = _activation(sec, "linear")
        c2, h2, w2 = ctx.in_shape  # "out" (prev)
        self.from_shapes = [ctx.shapes[j] for j in self.refs]
        c1, h1, w1 = self.from_shapes[0]  # "add" (from)
        self.stride = max(1, w1 // w2)
        self.sample = max(1, w2 // w1)
        self.minc, self.minh, self.minw = min(c1, c2), min(h1, h2), min(w1, w2)
        self.same = [s == ctx.in_shape for s in self.from_shapes]
        # AlexeyAB learned weights: one per input (prev first), or one per input and channel
        if wtype in ("per_feature", "per_layer"):
            self.weight: nn.Parameter | None = nn.Parameter(torch.ones(len(froms) + 1, 1))
        elif wtype == "per_channel":
            self.weight = nn.Parameter(torch.ones(len(froms) + 1, c2))
        elif wtype == "none":
            self.weight = None
        else:
            raise CnnlabError(f"{sec.where('weights_type')}: unknown weights_type={wtype!r} (per_feature, per_channel)")
        self.normalization = sec.str("weights_normalization", "none") or "none"
        if self.normalization not in ("none", "relu", "softmax"):
            raise CnnlabError(f"{sec.where('weights_normalization')}: unknown weights_normalization={self.normalization!r}")

    def _weights(self) -> torch.Tensor:  # (inputs, C or 1), normalized across inputs
        assert self.weight is not None
        w = self.weight
        if self.normalization == "relu":
            w = F.relu(w)
            return w / (1e-4 + w.sum(0, keepdim=True))
        if self.normalization == "softmax":
            e = torch.exp(w - w.max(0, keepdim=True).values)
            return e / (1e-4 + e.sum(0, keepdim=True))
        return w

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        if self.alexeyab:
            return self._forward_alexeyab(x, outputs)
        add = outputs[self.refs[0]]
        assert add is not None
        if self.same[0]:
            y = x * self.alpha + add * self.beta if (self.alpha, self.beta) != (1.0, 1.0) else x + add
            return self.act(y)
        s, t = self.sample, self.stride
        c, h, w = self.minc, self.minh, self.minw
        y = x.clone()
        a = add[:, :c, : h * t : t, : w * t : t]  # (N, c, h, w) strided view of from
        y[:, :c, : h * s : s, : w * s : s] = self.alpha * y[:, :c, : h * s : s, : w * s : s] + self.beta * a
        return self.act(y)

    def _forward_alexeyab(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        n = x.shape[0]
        ws = self._weights()[:, :, None, None] if self.weight is not None else None  # (inputs, C|1, 1, 1)
        y = x * ws[0] if ws is not None else x
        for i, j in enumerate(self.refs):
            add = outputs[j]
            assert add is not None
            if ws is not None:
                add = add * ws[i + 1] if self.same[i] else add  # unequal: weighted below, per out channel
            if self.same[i]:
                y = y + add
                continue
            k = min(add[0].numel(), y[0].numel())
            flat_add = add.reshape(n, -1)[:, :k]
            if ws is not None:
                flat_add = flat_add * ws[i + 1].expand(x.shape[1:]).reshape(-1)[:k]
            y = y.reshape(n, -1)
            y = torch.cat([y[:, :k] + flat_add, y[:, k:]], dim=1).reshape(x.shape)
        return self.act(y)

    def blocks(self, transpose: bool = False) -> list[torch.Tensor]:
        return [self.weight.data] if self.weight is not None else []

    def describe(self, flavor: str) -> str:
        return f"res  {self.refs[0]:3d}                {_shape_str(self.in_shape)}   ->  {_shape_str(self.out_shape)}"


class ScaleChannels(DarknetLayer):
    """AlexeyAB: ``from`` output scaled per channel (or per pixel with ``scale_wh``) by the previous output."""

    kind = "scale_channels"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        j = ctx.layer_ref(sec, "from", sec.int("from", 0))
        super().__init__(ctx.in_shape, ctx.shapes[j])
        self.refs = [j]
        self.scale_wh = bool(sec.int("scale_wh", 0))
        self.act_name, self.act = _activation(sec, "linear")

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        src = outputs[self.refs[0]]
        assert src is not None
        return self.act(src * x)  # x: (N, C, 1, 1) or (N, 1, H, W) broadcasts over src (N, C, H, W)

    def describe(self, flavor: str) -> str:
        return f"scale Layer: {self.refs[0]}"


class Sam(DarknetLayer):
    """AlexeyAB spatial attention: ``from`` output times the previous output, element-wise."""

    kind = "sam"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        j = ctx.layer_ref(sec, "from", sec.int("from", 0))
        super().__init__(ctx.in_shape, ctx.shapes[j])
        self.refs = [j]
        self.act_name, self.act = _activation(sec, "linear")

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        src = outputs[self.refs[0]]
        assert src is not None
        return self.act(src * x)

    def describe(self, flavor: str) -> str:
        return f"scale Layer: {self.refs[0]}"


class Activation_(DarknetLayer):
    kind = "activation"

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        super().__init__(ctx.in_shape, ctx.in_shape)
        self.act_name, self.act = _activation(sec, "linear")

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        return self.act(x)

    def describe(self, flavor: str) -> str:
        return f"Activation Layer: {self.outputs} inputs"


# --------------------------------------------------------------------------------------------
# detection heads


class _PassGrad(torch.autograd.Function):
    """``fn(x)`` whose backward hands the incoming gradient to ``x`` unchanged."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return fn(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _pass_grad(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """An activation as darknet trains through it: its derivative is not applied.

    backward_yolo_layer adds the [yolo] delta to the input's delta as it is (no logistic gradient), and
    the [region] class delta (``truth - p``, softmax or logistic) is the gradient of the logit
    (backward_region_layer_gpu applies the logistic's derivative to x, y and objectness only).
    The values are the plain ``fn(x)``; only the gradient differs.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _PassGrad.apply(x, fn)
    return fn(x)


def _iou_kind(name: str | None, mse: bool = False) -> str:
    """parse_yolo: ``iou_loss``/``iou_thresh_kind`` name; an unknown name is plain IoU."""
    kinds = ("mse", "giou", "diou", "ciou") if mse else ("giou", "diou", "ciou")
    return name if name in kinds else "iou"


class Yolo(DarknetLayer):
    """[yolo]: logistic on x, y, objectness and classes; w, h stay raw (yolo_layer.c).

    AlexeyAB's ``scale_x_y`` maps x, y to ``σ·s - (s-1)/2``; ``new_coords=1`` leaves everything raw.
    Layout stays darknet's ``[anchor][5+classes][H][W]``. In training the gradient crosses these
    activations unchanged, as darknet's backward does (:func:`_pass_grad`); the deltas themselves are
    :mod:`cnnlab.darknet.yolo_loss`'s.
    """

    kind = "yolo"
    is_detection = True

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        c, h, w = ctx.in_shape
        self.classes = sec.int("classes", 20)
        num = sec.int("num", 1)
        self.mask = sec.ints("mask") or list(range(num))
        self.anchors = sec.floats("anchors") or [0.5] * (2 * num)
        self.scale_x_y = sec.float("scale_x_y", 1.0) if ctx.alexeyab else 1.0
        self.new_coords = bool(sec.int("new_coords", 0)) if ctx.alexeyab else False
        self.nms_kind = sec.str("nms_kind", "default") if ctx.alexeyab else "default"
        self.beta_nms = sec.float("beta_nms", 0.6)
        need = (self.classes + 5) * len(self.mask)
        if c != need:
            prev = ctx.index - 1
            raise CnnlabError(
                f"{sec.where()}: layer {prev} before this [yolo] has {c} filters, but classes={self.classes} "
                f"and {len(self.mask)} masks need filters=(classes+5)*len(mask)={need}; set filters={need}"
            )
        if len(self.anchors) < 2 * (max(self.mask) + 1):
            raise CnnlabError(f"{sec.where('anchors')}: [yolo] mask uses anchor {max(self.mask)} but only {len(self.anchors) // 2} anchors are given")
        super().__init__(ctx.in_shape, ctx.in_shape)
        self.n = len(self.mask)
        self.total = num  # all anchors of the cfg line (l.total); ``mask`` picks this layer's
        self.net_w, self.net_h = ctx.net_w, ctx.net_h
        self.index, self.flavor = ctx.index, ctx.flavor
        self._training_keys(sec, ctx)

    def _training_keys(self, sec: Section, ctx: BuildContext) -> None:
        """The keys forward_yolo_layer's deltas read (parse_yolo); pjreddie reads only the first three."""
        ab = ctx.alexeyab
        self.max_boxes = sec.int("max", 200 if ab else 90)  # truths per image darknet looks at
        self.ignore_thresh = sec.float("ignore_thresh", 0.5)
        self.truth_thresh = sec.float("truth_thresh", 1.0)
        self.iou_thresh = sec.float("iou_thresh", 1.0) if ab else 1.0
        self.iou_thresh_kind = _iou_kind(sec.str("iou_thresh_kind", "iou") if ab else "iou")
        self.iou_loss = _iou_kind(sec.str("iou_loss", "mse") if ab else "mse", mse=True)
        self.iou_normalizer = sec.float("iou_normalizer", 0.75) if ab else 1.0
        self.obj_normalizer = sec.float("obj_normalizer", 1.0) if ab else 1.0
        self.cls_normalizer = sec.float("cls_normalizer", 1.0) if ab else 1.0
        self.delta_normalizer = sec.float("delta_normalizer", 1.0) if ab else 1.0  # GPU backward only
        self.label_smooth_eps = sec.float("label_smooth_eps", 0.0) if ab else 0.0
        self.max_delta = sec.float("max_delta", math.inf) if ab else math.inf
        self.objectness_smooth = bool(sec.int("objectness_smooth", 0)) if ab else False
        self.focal_loss = bool(sec.int("focal_loss", 0)) if ab else False
        self.show_details = bool(sec.int("show_details", 1)) if ab else True
        cpc = sec.ints("counters_per_class") if ab else []
        if cpc and len(cpc) != self.classes:
            raise CnnlabError(
                f"{sec.where('counters_per_class')}: counters_per_class has {len(cpc)} values but classes={self.classes}; give one count per class"
            )
        # get_classes_multipliers: max count / count per class, clipped at max_delta
        top = max([max(c, 1) for c in cpc], default=1)
        self.classes_multipliers = [min(top / max(c, 1), self.max_delta) for c in cpc] or None

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        if self.new_coords:
            return x
        n, _, h, w = x.shape
        v = x.reshape(n, self.n, 5 + self.classes, h, w)
        s = self.scale_x_y
        xy = _pass_grad(lambda t: torch.sigmoid(t) * s - (s - 1) / 2 if s != 1.0 else torch.sigmoid(t), v[:, :, 0:2])
        rest = _pass_grad(torch.sigmoid, v[:, :, 4:])
        return torch.cat([xy, v[:, :, 2:4], rest], dim=2).reshape(x.shape)

    def describe(self, flavor: str) -> str:
        return "yolo"


class Region(DarknetLayer):
    """[region] (YOLOv2): logistic on x, y, objectness; softmax over classes per anchor and cell.

    In training the logistic's derivative applies to x, y and objectness, and the class gradient
    crosses the softmax unchanged (backward_region_layer_gpu, :func:`_pass_grad`).
    """

    kind = "region"
    is_detection = True

    def __init__(self, sec: Section, ctx: BuildContext) -> None:
        c, h, w = ctx.in_shape
        self.classes = sec.int("classes", 20)
        self.coords = sec.int("coords", 4)
        self.n = sec.int("num", 1)
        self.softmax = bool(sec.int("softmax", 0))
        self.background = bool(sec.int("background", 0))
        self.anchors = sec.floats("anchors") or [0.5] * (2 * self.n)
        if sec.has("tree") or sec.has("map"):
            raise CnnlabError(f"{sec.where()}: [region] with tree=/map= (YOLO9000) is not supported")
        need = self.n * (self.coords + self.classes + 1)
        if c != need:
            raise CnnlabError(
                f"{sec.where()}: layer {ctx.index - 1} before this [region] has {c} filters, but num={self.n}, "
                f"coords={self.coords}, classes={self.classes} need filters=num*(coords+1+classes)={need}; set filters={need}"
            )
        super().__init__(ctx.in_shape, ctx.in_shape)
        self.net_w, self.net_h = ctx.net_w, ctx.net_h
        self.index, self.flavor = ctx.index, ctx.flavor
        # the keys forward_region_layer's deltas read (parse_region)
        self.max_boxes = sec.int("max", 200) if ctx.alexeyab else 30  # pjreddie loops over 30 truths
        self.thresh = sec.float("thresh", 0.5)
        self.rescore = bool(sec.int("rescore", 0))
        self.bias_match = bool(sec.int("bias_match", 0))
        self.absolute = bool(sec.int("absolute", 0))  # read by darknet, used by neither fork
        self.coord_scale = sec.float("coord_scale", 1.0)
        self.object_scale = sec.float("object_scale", 1.0)
        self.noobject_scale = sec.float("noobject_scale", 1.0)
        self.class_scale = sec.float("class_scale", 1.0)

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        n, _, h, w = x.shape
        k = self.coords
        v = x.reshape(n, self.n, k + 1 + self.classes, h, w)
        xy = torch.sigmoid(v[:, :, 0:2])
        obj = v[:, :, k : k + 1] if self.background else torch.sigmoid(v[:, :, k : k + 1])
        cls = _pass_grad(lambda t: torch.softmax(t, dim=2) if self.softmax else torch.sigmoid(t), v[:, :, k + 1 :])
        return torch.cat([xy, v[:, :, 2:k], obj, cls], dim=2).reshape(x.shape)

    def describe(self, flavor: str) -> str:
        return "detection"


# --------------------------------------------------------------------------------------------
# registration: section name → handler

for _name, _cls in {
    "convolutional": Convolutional,
    "connected": Connected,
    "local": Local,
    "batchnorm": BatchNorm,
    "maxpool": MaxPool,
    "avgpool": AvgPool,
    "crop": Crop,
    "reorg": Reorg,
    "upsample": Upsample,
    "dropout": Dropout,
    "softmax": Softmax,
    "cost": Cost,
    "normalization": Normalization,
    "route": Route,
    "shortcut": Shortcut,
    "scale_channels": ScaleChannels,
    "sam": Sam,
    "activation": Activation_,
    "yolo": Yolo,
    "region": Region,
}.items():
    LAYERS.add(_name, _cls)


@LAYERS.register("local_avgpool")
def _local_avgpool(sec: Section, ctx: BuildContext) -> DarknetLayer:
    layer = MaxPool(sec, ctx, average=True)
    layer.kind = "local_avgpool"
    return layer
