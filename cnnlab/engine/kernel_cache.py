"""Which convolution kernel timed fastest for a layer on this machine, remembered between runs
(and, in the same file, how many threads a one-image forward runs on: :mod:`.thread_choice`).

The engine times a 3×3 convolution's candidates (packed oneDNN, Winograd F(2×2), F(4×4)) at load,
in the network (:mod:`.kernel_choice`). Done on every run, that costs ResNet-18 about 0.6 s and
lets two runs of one command pick differently on a noisy machine (their outputs then agree only to
float rounding). So the choice is kept in a small JSON file, keyed by the CPU, torch's version, the
timing method and the layer: the first run on a machine times, later runs read. The file lives in
``$CNNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnlab``, else ``~/.cache/cnnlab``; deleting it makes
the next run time again.
A cache that cannot be read or written is ignored (the kernels are then timed on each run).
"""

from __future__ import annotations

import functools
import json
import platform
from pathlib import Path

import torch
from torch import nn

from cnnlab.fileio import WriteError, write_json_atomic

FILE_NAME = "conv-kernels.json"
# part of every key: entries written when each layer was timed on its own (a worse method) lack it
METHOD = "timed in the network"


def cache_file() -> Path:
    from cnnlab.fileio import user_cache_dir

    return user_cache_dir() / FILE_NAME


def layer_key(conv: nn.Conv2d, input_size: tuple[int, ...], activation: str, candidates: list[str]) -> str:
    """One layer's key: what decides its timings (machine, torch, shapes, dtype), not its weights."""
    layer = [list(input_size), list(conv.weight.shape), list(conv.padding), str(conv.weight.dtype), activation]
    return json.dumps([machine(), torch.__version__, METHOD, layer, candidates])


class Choices:
    """The cached choices, read once per network; the ones timed meanwhile are written back together
    by :meth:`save`, merged into the file as it is then (another process may have added its own)."""

    def __init__(self) -> None:
        self._known = _read()
        self._new: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        value = self._new.get(key, self._known.get(key))
        return value if isinstance(value, str) else None

    def add(self, key: str, choice: str) -> None:
        self._new[key] = choice

    def save(self) -> None:
        if not self._new:
            return
        entries = _read() | self._new
        try:
            write_json_atomic(cache_file(), entries)  # temp file + rename: a reader never sees half of it
        except WriteError:
            pass  # no cache to be had (read-only home, ...): the next run times again


def _read() -> dict[str, object]:
    try:
        entries = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


@functools.cache
def machine() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"
