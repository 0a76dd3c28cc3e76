"""The contract every cnnlab classifier follows.

A model carries its own preprocessing (:class:`Preprocess`) so that train, valid, predict and export
all use one definition, and names its first conv and classifier so fine-tuning is generic (timm's
``forward_features`` / ``forward_head`` / ``reset_classifier`` contract).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.model_meta import IMAGENET_MEAN, IMAGENET_STD, ModelMeta, Preprocess

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Classifier", "ModelMeta", "Preprocess", "Stage"]

Stage = tuple[str, list[str]]  # (label, dotted names of its modules), e.g. ("conv1+bn1", ["conv1", "bn1"])
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


class Classifier(nn.Module):
    """Base class: ``forward = forward_head(forward_features(x))``.

    Subclasses implement :meth:`forward_features` (→ the last feature map) and
    :meth:`forward_head` (→ logits), and set ``self.meta``. :meth:`reset_classifier` replaces the
    ``nn.Linear`` named by ``meta.classifier``; families with another head override it.
    """

    meta: ModelMeta
    num_classes: int
    frozen: tuple[str, ...] = ()  # modules that train() leaves in eval mode (frozen layers keep their BatchNorm statistics)

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        for name in self.frozen:  # DDP, EMA and torch.compile wrappers reach here through nn.Module.train
            self.get_submodule(name).eval()
        return self

    def head_modules(self) -> list[str]:
        """The classifier and the auxiliary heads: what fine-tuning always trains, at ``--head-lr-mult``."""
        aux = [name.split(".")[0] for name in self.meta.extra.get("aux_classifiers", [])]
        return [self.meta.classifier, *aux]

    def stages(self) -> list[Stage]:
        """The blocks before the head in forward order: what ``--freeze N`` counts.

        The top-level children with parameters, in the order they were built (every family builds in
        forward order); a child that holds the classifier, or is named in ``meta.extra["stage_parents"]``
        (a ``features`` Sequential), is split into its own children; a normalisation layer joins the
        layer before it, so conv + BatchNorm is one stage. Families with another order override this.
        """
        head = self.head_modules()
        parents = set(self.meta.extra.get("stage_parents", ()))
        out: list[Stage] = []

        def walk(module: nn.Module, prefix: str) -> None:
            for child_name, child in module.named_children():
                name = prefix + child_name
                if name in head or not any(True for _ in child.parameters()):
                    continue
                if name in parents or any(h.startswith(name + ".") for h in head):
                    walk(child, name + ".")
                elif isinstance(child, _NORMS) and out:
                    label, names = out[-1]
                    out[-1] = (f"{label}+{child_name}", [*names, name])
                else:
                    out.append((name, [name]))

        walk(self, "")
        return out

    def adapt_state_dict(self, state_dict: dict) -> dict:
        """Another library's ``state_dict`` in this model's names and shapes (timm's
        ``checkpoint_filter_fn`` the other way round); families whose layout differs override it."""
        return state_dict

    def feature_stages(self) -> int:
        """How many leading stages :meth:`forward_features` runs (``--freeze features``); the rest of
        the stages (``meta.extra["head_stages"]``: LeNet's C5/F6, VGG's fc6/fc7) are hidden layers of the head."""
        return len(self.stages()) - self.meta.extra.get("head_stages", 0)

    def frozen_by_design(self) -> int:
        """Leading stages the architecture itself freezes (a darknet cfg's ``stopbackward=1``)."""
        return 0

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
        self.set_submodule(self.meta.classifier, new)
        self.num_classes = num_classes
