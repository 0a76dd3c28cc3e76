"""Fixtures for the ImageNet-preparation tests; the builders live in ilsvrc_fixtures.py (a module
name of its own, so it cannot be shadowed by another folder's conftest)."""

from __future__ import annotations

import pytest

from ilsvrc_fixtures import Ilsvrc, build_ilsvrc


@pytest.fixture(scope="session")
def ilsvrc_fixture(tmp_path_factory: pytest.TempPathFactory) -> Ilsvrc:
    return build_ilsvrc(tmp_path_factory.mktemp("ilsvrc_src"))
