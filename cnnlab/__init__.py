"""cnnlab: from raw image data to a trained, evaluated, exported convolutional network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab.errors import CnnlabError

__version__ = "0.1.0"
__all__ = ["CnnlabError", "create_model", "list_models", "__version__"]

if TYPE_CHECKING:
    from cnnlab.models import create_model, list_models


def __getattr__(name: str) -> Any:
    # Lazy: `import cnnlab` must not import torch (~4 s), so commands that never touch a tensor
    # (`cnnlab data urls`, `--help`) start at once.
    if name in ("create_model", "list_models"):
        import cnnlab.models

        return getattr(cnnlab.models, name)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
