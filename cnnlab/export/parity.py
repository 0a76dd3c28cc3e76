"""Each export checked against the PyTorch model on real images: the largest absolute difference.

Images: the held-out ``mnist5k`` digits for one-channel models, the photos that ship inside
scikit-image / scikit-learn (and their mirror images) for three-channel ones; each through the
model's own evaluation preprocessing (:func:`cnnlab.data.transforms.eval_transform`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cnnlab.export.graph import normalize_uint8
from cnnlab.export.runtime import Runner
from cnnlab.model_meta import Preprocess


@dataclass
class Parity:
    max_abs: float  # over every output element
    top1_equal: int | None  # classifiers: images whose top-1 class agrees
    images: int
    what: str  # where the images came from
    scale: float = 0.0  # the largest |PyTorch output|: what the difference is small against

    def line(self, backend: str) -> str:
        top1 = f"; top-1 equal {self.top1_equal}/{self.images}" if self.top1_equal is not None else ""
        # an untrained or unusual net can output 1e10 or 1e-6: the difference alone would not say if it is small
        scale = f" (largest |output| {self.scale:.3g})" if self.scale and not 1e-2 <= self.scale <= 1e3 else ""
        return f"parity on {self.images} {self.what}: max |{backend} - PyTorch| = {self.max_abs:.3g}{scale}{top1}"


def sample_images(pre: Preprocess, n: int = 32) -> tuple[torch.Tensor, str]:
    """(N, C, H, W) uint8 at the model's input size, and a description of them."""
    from cnnlab.data.transforms import eval_transform

    tf = eval_transform(pre)
    if pre.channels == 1:
        from cnnlab.data.datasets import open_split

        src = open_split("mnist5k", "val")
        return torch.stack([tf(src.load(i)) for i in range(min(n, len(src)))]), "held-out mnist5k digits"
    from cnnlab.data.shapes import background_photos

    photos = [torch.from_numpy(np.array(p)).permute(2, 0, 1).contiguous() for p in background_photos()]  # PIL arrays are read-only
    photos += [p.flip(-1) for p in photos]
    return torch.stack([tf(p) for p in photos[:n]]), "scikit-image/scikit-learn photos (and mirrors)"


@torch.no_grad()
def reference_outputs(model: nn.Module, pre: Preprocess, images: torch.Tensor) -> list[np.ndarray]:
    """The PyTorch model (fp32, as loaded) on uint8 ``images``, normalised as cnnlab normalises."""
    out = model.eval()(normalize_uint8(images, pre))
    return [o.float().numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]


def compare(reference: list[np.ndarray], exported: list[np.ndarray], what: str, classify: bool) -> Parity:
    if len(reference) != len(exported) or any(r.shape != e.shape for r, e in zip(reference, exported)):
        shapes = [r.shape for r in reference], [e.shape for e in exported]
        raise AssertionError(f"exported outputs have shapes {shapes[1]}, PyTorch's {shapes[0]}")
    diff = max(float(np.abs(r - e).max()) for r, e in zip(reference, exported))
    top1 = int((reference[0].argmax(1) == exported[0].argmax(1)).sum()) if classify else None
    scale = max(float(np.abs(r).max()) for r in reference)
    return Parity(diff, top1, len(reference[0]), what, scale)


def check(model: nn.Module, pre: Preprocess, runner: Runner, n: int = 32) -> Parity:
    """``runner`` (an exported file) against ``model`` on up to ``n`` real images (a static-batch file
    gets them in its batches: :class:`Runner` splits and fills)."""
    images, what = sample_images(pre, n)
    uint8 = runner.metadata.get("input_dtype") == "uint8"
    exported = runner(images if uint8 else normalize_uint8(images, pre))
    classify = runner.metadata.get("task") not in ("detect", "embedding")
    return compare(reference_outputs(model, pre, images), exported, what, classify)
