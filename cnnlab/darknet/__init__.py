"""Darknet compatibility: any ``.cfg`` as a PyTorch network, ``.weights`` read and written, darknet's commands."""

from __future__ import annotations

from cnnlab.darknet.model import DarknetNet, load_darknet, rebuild_darknet

__all__ = ["DarknetNet", "load_darknet", "rebuild_darknet"]
