"""cnnlab: from raw image data to a trained, evaluated, exported convolutional network."""

from __future__ import annotations

from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["CnnlabError", "create_model", "list_models", "__version__"]
