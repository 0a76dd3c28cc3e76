"""Shared helpers for the model tests: few threads (the machine is shared), and the docs table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def documented_counts() -> dict[str, int]:
    """``{model: parameters}`` from the table in docs/models.md (rows like ``| `vgg16` | 138,357,544 |``)."""
    counts = {}
    for m in re.finditer(r"^\| `(\w+)` \| ([\d,]+) \|", DOCS.read_text(), re.MULTILINE):
        counts[m.group(1)] = int(m.group(2).replace(",", ""))
    assert counts, f"no parameter table found in {DOCS}"
    return counts
