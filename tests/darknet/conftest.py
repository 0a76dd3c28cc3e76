"""Fixtures for the darknet reference tests: the oracle in ../shared/darknet and its regenerated weights.

The reference sits beside the repository (``<clone>/../shared/darknet``). Its weights are not shipped:
they are regenerated with its own ``make_weights.py`` into pytest's cache folder (git-ignored) and
checked against its ``SHA256SUMS`` before use.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .refdata import REF, SKIP_REASON, have_ref

def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def expected_sums() -> dict[str, str]:
    sums = {}
    for line in (REF / "weights" / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name.lstrip("*")] = digest
    return sums


@pytest.fixture(scope="session")
def weights_dir(request: pytest.FixtureRequest) -> Path:
    if not have_ref():
        pytest.skip(SKIP_REASON)
    return Path(request.config.cache.mkdir("darknet-weights"))


@pytest.fixture(scope="session")
def weights_for(weights_dir: Path):
    """``weights_for("darknet")`` → path of regenerated, checksum-verified darknet.weights."""
    sums = expected_sums()

    def get(net: str) -> Path:
        out = weights_dir / f"{net}.weights"
        want = sums[f"{net}.weights"]
        if not out.exists() or sha256(out) != want:
            subprocess.run(
                [sys.executable, str(REF / "make_weights.py"), str(REF / "cfg" / f"{net}.cfg"), str(out)],
                check=True,
                capture_output=True,
            )
            got = sha256(out)
            assert got == want, f"regenerated {net}.weights has sha256 {got}, SHA256SUMS says {want}"
        return out

    return get


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)  # the machine is shared; numerics do not depend on it
