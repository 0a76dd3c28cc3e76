"""The contract every cnnlab classifier follows.

A model carries its own preprocessing (:class:`Preprocess`) so that train, valid, predict and export
all use one definition, and names its first conv and classifier so fine-tuning is generic (timm's
``forward_features`` / ``forward_head`` / ``reset_classifier`` contract).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.model_meta import IMAGENET_MEAN, IMAGENET_STD, ModelMeta, Preprocess

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Classifier", "ModelMeta", "Preprocess"]


class Classifier(nn.Module):
    """Base class: ``forward = forward_head(forward_features(x))``.

    Subclasses implement :meth:`forward_features` (→ the last feature map) and
    :meth:`forward_head` (→ logits), and set ``self.meta``. :meth:`reset_classifier` replaces the
    ``nn.Linear`` named by ``meta.classifier``; families with another head override it.
    """

    meta: ModelMeta
    num_classes: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.meta.classifier)

    def reset_classifier(self, num_classes: int) -> None:
        old = self.get_classifier()
        if not isinstance(old, nn.Linear):
            raise NotImplementedError(f"{type(self).__name__} must override reset_classifier")
        new = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
        parent_name, _, attr = self.meta.classifier.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        setattr(parent, attr, new)
        self.num_classes = num_classes
