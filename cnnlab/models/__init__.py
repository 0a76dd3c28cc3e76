"""Model registry and families. Importing a family module registers its variants."""

from __future__ import annotations

from cnnlab.errors import CnnlabError
from cnnlab.models._base import Classifier, ModelMeta, Preprocess
from cnnlab.registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register
# A darknet cfg is a file, not a registry entry (so zoo-wide tests don't list it).
MODELS.add_prefix("darknet", "cnnlab.darknet.classifier:create_darknet_model")


def create_model(name: str, num_classes: int | None = None, in_chans: int | None = None, **kwargs) -> Classifier:
    """Build a registered architecture, e.g. ``create_model("resnet18", num_classes=10)``, or a
    darknet classifier cfg: ``create_model("darknet:path/to/net.cfg")``."""
    builder = MODELS.get(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    _check_arguments(name, builder, kwargs)
    return builder(**kwargs)


def _check_arguments(name: str, builder, kwargs: dict) -> None:
    """An argument the builder does not take is one line naming what it takes (``--model-kwargs``)."""
    import inspect

    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        takes = ", ".join(k for k, p in params.items() if p.kind is not p.VAR_POSITIONAL) or "no arguments"
        raise CnnlabError(f"model {name!r} takes no argument {unknown[0]!r} (--model-kwargs); it takes: {takes}")


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell glob such as ``"resnet*"``."""
    return MODELS.names(pattern)


# Families register themselves on import; keep this list alphabetical.
from cnnlab.models import alexnet, googlenet, inception, inception_resnet, lenet, resnet, vgg  # noqa: E402,F401

__all__ = ["Classifier", "ModelMeta", "Preprocess", "MODELS", "register_model", "create_model", "list_models"]
