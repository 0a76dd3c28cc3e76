"""Darknet compatibility: any ``.cfg`` as a PyTorch network, ``.weights`` read and written, darknet's commands."""

from __future__ import annotations

from cnnlab.darknet.model import (
    DarknetNet,
    checkpoint_payload,
    darknet_preprocess,
    from_checkpoint_payload,
    load_darknet,
    rebuild_darknet,
)

__all__ = [
    "DarknetNet",
    "checkpoint_payload",
    "darknet_preprocess",
    "from_checkpoint_payload",
    "load_darknet",
    "rebuild_darknet",
]
