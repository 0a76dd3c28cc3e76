"""``report.json``: how many images ended in each outcome, and which ones failed.

Outcomes that keep the image (ok, converted_*, grayscale) are counted only; every other outcome
also lists the ids so a user can look at them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

KEPT = frozenset({"ok", "converted_cmyk", "converted_png", "converted_other", "converted_grayscale", "grayscale"})


class Report:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.failures: dict[str, list[str]] = defaultdict(list)

    def add(self, outcome: str, ident: str | None = None) -> None:
        self.counts[outcome] += 1
        if outcome not in KEPT and ident is not None:
            self.failures[outcome].append(ident)

    def merge(self, other: "Report") -> None:
        self.counts.update(other.counts)
        for k, ids in other.failures.items():
            self.failures[k].extend(ids)

    @property
    def kept(self) -> int:
        return sum(n for k, n in self.counts.items() if k in KEPT)

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "kept": self.kept,
            "failures": {k: sorted(v) for k, v in sorted(self.failures.items())},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        r = cls()
        r.counts.update(d.get("counts", {}))
        for k, ids in d.get("failures", {}).items():
            r.failures[k].extend(ids)
        return r

    def summary(self) -> str:
        return ", ".join(f"{k}={n}" for k, n in sorted(self.counts.items())) or "nothing processed"
