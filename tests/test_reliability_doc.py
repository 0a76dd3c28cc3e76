"""docs/reliability.md stays true: every test it names exists (file and function)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(\w+)(\[[^\]`]*\])?")


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test")}


def test_every_named_test_exists() -> None:
    refs = REFERENCE.findall(DOC.read_text(encoding="utf-8"))
    assert len(refs) >= 40, f"the matrix names {len(refs)} tests"
    missing = []
    for file, name, _params in refs:  # a parametrised id "[...]" names a case of the function
        path = REPO / file
        if not path.is_file() or name not in _test_functions(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"


def test_every_table_row_names_a_test() -> None:
    """A fault row without its test would be a claim nothing keeps true."""
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| ") and not line.startswith("| Fault")]
    unbacked = [row for row in rows if not REFERENCE.search(row)]
    assert not unbacked, unbacked
