"""Every test (and every command a test runs) keeps the engine's kernel choices in its own folder,
never in the user's cache, and times them afresh."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_kernel_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("kernel-cache")
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(folder))
    return folder
