"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document
recognition").

``lenet5`` is the common modern form: full C3 connections, ReLU and max-pooling, 61,706 parameters
for 10 classes. The paper-exact variant (sparse C3, scaled tanh, trainable subsampling, RBF output)
lives beside it as ``lenet5_paper``: 60,000 trainable parameters (C1 156, S2 12, C3 1,516, S4 32,
C5 48,120, F6 10,164) with the fixed RBF output, or 60,850 with a linear output layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models import register_model
from cnnlab.models._base import Classifier, ModelMeta, Preprocess
from cnnlab.models.summary import LayerInfo

PAPER = "LeCun et al. 1998, Gradient-based learning applied to document recognition"
# MNIST statistics; 28×28 digits are centred in the 32×32 field by the zero-padding center crop.
MNIST_PREPROCESS = Preprocess(input_size=(1, 32, 32), mean=(0.1307,), std=(0.3081,), resize=28)
# Section II.A: background (white) becomes -0.1 and ink (black) 1.175, so the input has roughly zero
# mean and unit variance. With MNIST's ink = 1 that is x' = -0.1 + 1.275 x, i.e. (x - mean) / std:
PAPER_PREPROCESS = Preprocess(input_size=(1, 32, 32), mean=(0.1 / 1.275,), std=(1 / 1.275,), resize=28)

# Table I: which S2 maps (rows 0-5) each C3 map (0-15) reads — 60 of the 96 possible connections.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip


class LeNet5(Classifier):
    def __init__(self, num_classes: int = 10, in_chans: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate  # dropout before the classifier (timm's drop_rate); not in the paper
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5),  # C1: (B, 6, 28, 28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # S2: (B, 6, 14, 14)
            nn.Conv2d(6, 16, 5),  # C3: (B, 16, 10, 10)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # S4: (B, 16, 5, 5)
        )
        self.c5 = nn.Linear(16 * 5 * 5, 120)
        self.f6 = nn.Linear(120, 84)
        self.fc = nn.Linear(84, num_classes)
        self.meta = ModelMeta(
            name="lenet5",
            preprocess=MNIST_PREPROCESS.with_channels(in_chans),
            first_conv="features.0",
            classifier="fc",
            paper=PAPER,
            extra={"stage_parents": ["features"], "head_stages": 2},  # stages C1, C3 (features), C5, F6 (head)
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.relu(self.c5(x.flatten(1)))
        x = torch.relu(self.f6(x))
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)


@register_model()
def lenet5(num_classes: int = 10, in_chans: int = 1, drop_rate: float = 0.0) -> LeNet5:
    return LeNet5(num_classes, in_chans, drop_rate)


def scaled_tanh(x: torch.Tensor) -> torch.Tensor:
    """Appendix A: f(a) = A·tanh(S·a) with A = 1.7159, S = 2/3, so f(±1) = ±1."""
    return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsampling(nn.Module):
    """S2/S4: the sum of each 2×2 block times one trainable coefficient plus one trainable bias per
    map (2 parameters per map), followed by the squashing function."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), 0.25))  # start as a plain average
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.avg_pool2d(x, 2) * 4  # (B, C, H/2, W/2): the 2×2 sum
        return scaled_tanh(s * self.weight[:, None, None] + self.bias[:, None, None])

    def summary_row(self, inp: torch.Tensor, out: torch.Tensor) -> LayerInfo:
        return LayerInfo("avg", tuple(inp.shape[1:]), tuple(out.shape[1:]), size=(2, 2), stride=(2, 2))


class SparseConv(nn.Module):
    """C3: a 5×5 convolution in which output map j sees only the input maps ``table[j]``.

    Only the 60 connected kernels are parameters (so the count is the paper's 1,516); they are
    scattered into a dense, otherwise zero weight at each forward, which keeps the gradient exact.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], in_ch: int, k: int = 5) -> None:
        super().__init__()
        pairs = [(j, i) for j, inputs in enumerate(table) for i in inputs]
        self.out_ch, self.in_ch, self.k = len(table), in_ch, k
        # one-hot (out·in, pairs): a matmul places each kernel, exactly (1·w + 0·…), where an
        # index_put would do the same but exporters do not all know it (OpenVINO's has no rule)
        scatter = torch.zeros(self.out_ch * in_ch, len(pairs))
        scatter[[j * in_ch + i for j, i in pairs], range(len(pairs))] = 1.0
        self.register_buffer("scatter", scatter, persistent=False)
        bound = 2.4 / (len(table[0]) * k * k) ** 0.5  # scale of Appendix C's ±2.4/F_i, per map fan-in
        self.weight = nn.Parameter(torch.empty(len(pairs), k, k).uniform_(-bound, bound))  # (60, 5, 5)
        self.bias = nn.Parameter(torch.zeros(self.out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = (self.scatter.to(self.weight.dtype) @ self.weight.flatten(1)).view(self.out_ch, self.in_ch, self.k, self.k)
        return F.conv2d(x, dense, self.bias)

    def summary_row(self, inp: torch.Tensor, out: torch.Tensor) -> LayerInfo:
        macs = self.weight.numel() * out.shape[2] * out.shape[3]  # only the connected kernels
        shapes = tuple(inp.shape[1:]), tuple(out.shape[1:])
        return LayerInfo("conv", *shapes, self.out_ch, (self.k, self.k), macs=macs)


class RBFOutput(nn.Module):
    """The output layer of section II.B: y_i = Σ_j (x_j - w_ij)², a distance to a fixed ±1 code per
    class. The codes are not trained (the paper drew them as 7×12 bitmaps of the characters; we use
    fixed random ±1 codes, which keeps classes equally far apart). Returns ``-y`` so that the usual
    "largest logit wins" and cross-entropy apply."""

    def __init__(self, in_features: int, num_classes: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, 2, (num_classes, in_features), generator=g).float() * 2 - 1
        self.register_buffer("centers", codes)  # (K, 84), saved with the model, never updated
        self.in_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the sum of squares as written (not cdist: ONNX has no cdist, and torch has no bf16 cdist on the CPU)
        return -(x.unsqueeze(1) - self.centers).pow(2).sum(-1)  # (B, K)

    def summary_row(self, inp: torch.Tensor, out: torch.Tensor) -> LayerInfo:
        k = self.centers.shape[0]
        return LayerInfo("rbf", tuple(inp.shape[1:]), tuple(out.shape[1:]), k, macs=k * self.in_features)


class LeNet5Paper(Classifier):
    def __init__(self, num_classes: int = 10, in_chans: int = 1, output: str = "rbf") -> None:
        super().__init__()
        if output not in ("rbf", "linear"):
            raise ValueError(f"output must be 'rbf' or 'linear', not {output!r}")
        self.num_classes = num_classes
        self.c1 = nn.Conv2d(in_chans, 6, 5)  # (B, 6, 28, 28)
        self.s2 = Subsampling(6)  # (B, 6, 14, 14)
        self.c3 = SparseConv(C3_TABLE, 6)  # (B, 16, 10, 10)
        self.s4 = Subsampling(16)  # (B, 16, 5, 5)
        self.c5 = nn.Conv2d(16, 120, 5)  # (B, 120, 1, 1): a convolution, fully connected at 32×32
        self.f6 = nn.Linear(120, 84)
        self.output = RBFOutput(84, num_classes) if output == "rbf" else nn.Linear(84, num_classes)
        self.meta = ModelMeta(
            name="lenet5_paper",
            preprocess=PAPER_PREPROCESS.with_channels(in_chans),
            first_conv="c1",
            classifier="output",
            paper=PAPER,
            extra={"output": output, "head_stages": 1},  # F6 is in forward_head
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.s2(scaled_tanh(self.c1(x)))
        x = self.s4(scaled_tanh(self.c3(x)))
        return scaled_tanh(self.c5(x))  # (B, 120, 1, 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = scaled_tanh(self.f6(x.flatten(1)))  # (B, 84)
        return x if pre_logits else self.output(x)

    def reset_classifier(self, num_classes: int) -> None:
        if isinstance(self.output, RBFOutput):
            device = self.output.centers.device
            self.output = RBFOutput(self.output.in_features, num_classes).to(device)
            self.num_classes = num_classes
        else:
            super().reset_classifier(num_classes)


@register_model()
def lenet5_paper(num_classes: int = 10, in_chans: int = 1, output: str = "rbf") -> LeNet5Paper:
    return LeNet5Paper(num_classes, in_chans, output)
