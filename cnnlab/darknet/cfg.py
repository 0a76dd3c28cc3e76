"""Darknet ``.cfg`` (and ``.data``) files: parse as darknet does, and write back.

Darknet's reader (``read_cfg``/``read_option``) removes every space and tab, skips lines starting
with ``#`` or ``;``, opens a section on ``[``, and keeps the *first* value of a repeated key. Numbers
are read with C's ``atoi``/``atof``, so ``size=3x`` is 3. We keep each option's line number so
errors can point at the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.darknet.textfiles import path_part_as_text, read_text, split_lines
from cnnlab.errors import CnnlabError

# Section names darknet accepts as synonyms (parser.c string_to_layer_type).
ALIASES = {
    "conv": "convolutional",
    "conn": "connected",
    "max": "maxpool",
    "avg": "avgpool",
    "soft": "softmax",
    "lrn": "normalization",
    "network": "net",
    "deconv": "deconvolutional",
    "local_avg": "local_avgpool",
    "silence": "empty",
}

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)", re.I)


def atoi(text: str) -> int:
    """C ``atoi``: the leading integer, 0 if there is none."""
    m = _INT.match(text)
    return int(m.group(0)) if m else 0


def atof(text: str) -> float:
    """C ``atof``: the leading float, 0.0 if there is none."""
    m = _FLOAT.match(text)
    return float(m.group(0)) if m else 0.0


@dataclass
class Section:
    """One ``[type]`` block; ``options`` keeps darknet's first-occurrence-wins values."""

    type: str  # canonical name, e.g. "convolutional"
    line: int  # 1-based line of the ``[type]`` header
    options: dict[str, str] = field(default_factory=dict)
    option_lines: dict[str, int] = field(default_factory=dict)
    source: str = "<cfg>"
    raw_type: str = ""  # as written, e.g. "conv"

    def where(self, key: str | None = None) -> str:
        line = self.option_lines.get(key, self.line) if key else self.line
        return f"{self.source}:{line}"

    def has(self, key: str) -> bool:
        return key in self.options

    def str(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def int(self, key: str, default: int) -> int:
        v = self.options.get(key)
        return default if v is None else atoi(v)

    def float(self, key: str, default: float) -> float:
        v = self.options.get(key)
        return default if v is None else atof(v)

    def ints(self, key: str, default: list[int] | None = None) -> list[int]:
        v = self.options.get(key)
        if v is None:
            return list(default or [])
        return [atoi(s) for s in v.split(",") if s != ""]

    def floats(self, key: str, default: list[float] | None = None) -> list[float]:
        v = self.options.get(key)
        if v is None:
            return list(default or [])
        return [atof(s) for s in v.split(",") if s != ""]

    def require(self, key: str) -> str:
        v = self.options.get(key)
        if v is None:
            raise CnnlabError(f"{self.where()}: [{self.raw_type or self.type}] needs '{key}=' (darknet would crash here)")
        return v


def parse_cfg(text: str, source: str = "<cfg>") -> list[Section]:
    """Sections of a darknet cfg, in order. The first must be ``[net]``/``[network]``."""
    sections: list[Section] = []
    for lineno, raw in enumerate(split_lines(text), start=1):
        line = re.sub(r"[ \t\r\n]", "", raw)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            name = line[1:].rstrip("]") if line.endswith("]") else line[1:]
            sections.append(Section(ALIASES.get(name, name), lineno, source=source, raw_type=name))
            continue
        if "=" not in line:
            where = f"{source}:{lineno}"
            raise CnnlabError(f"{where}: cannot parse {raw.strip()!r}: expected 'key=value' or '[section]'")
        if not sections:
            raise CnnlabError(f"{source}:{lineno}: option {raw.strip()!r} comes before any [section]")
        key, value = line.split("=", 1)
        sec = sections[-1]
        if key not in sec.options:  # darknet's option_find returns the first match
            sec.options[key] = value
            sec.option_lines[key] = lineno
    if not sections:
        raise CnnlabError(f"{source}: no sections found; is this a darknet .cfg file?")
    if sections[0].type != "net":
        raise CnnlabError(f"{sections[0].where()}: the first section must be [net], not [{sections[0].raw_type}]")
    return sections


def read_cfg(path: str | Path) -> tuple[list[Section], str]:
    """Parse a cfg file; returns the sections and the file's text (kept for checkpoints)."""
    p = Path(path)
    try:
        text = read_text(p)  # any bytes, as darknet (cnnlab.darknet.textfiles)
    except OSError as e:
        raise CnnlabError(f"cannot read cfg {str(p)!r}: {e.strerror}") from None
    return parse_cfg(text, source=str(p)), text


def write_cfg(sections: list[Section]) -> str:
    """Darknet cfg text for ``sections`` (round-trips through :func:`parse_cfg`)."""
    out: list[str] = []
    for sec in sections:
        out.append(f"[{sec.raw_type or sec.type}]")
        out.extend(f"{k}={v}" for k, v in sec.options.items())
        out.append("")
    return "\n".join(out)


def read_data_file(path: str | Path) -> dict[str, str]:
    """A darknet ``.data`` file: key=value lines, spaces stripped, first occurrence wins."""
    p = Path(path)
    try:
        text = read_text(p)
    except OSError as e:
        raise CnnlabError(f"cannot read data file {str(p)!r}: {e.strerror}") from None
    options: dict[str, str] = {}
    for lineno, raw in enumerate(split_lines(text), start=1):
        line = re.sub(r"[ \t\r\n]", "", raw)
        if not line or line[0] in "#;":
            continue
        if "=" not in line:
            raise CnnlabError(f"{p}:{lineno}: cannot parse {raw.strip()!r}: expected key=value")
        k, v = line.split("=", 1)
        options.setdefault(k, v)
    return options


def resolve_data_path(path: str, data_file: Path) -> Path:
    """A path from a .data file: darknet opens it relative to the working directory; also try the
    .data file's folder and its parent (where `cnnlab data darknet` and most tutorials put them)."""
    p = Path(path)
    for cand in (p, data_file.parent / p, data_file.parent.parent / p):
        if cand.exists():
            return cand
    return p


def label_of(path: str, labels: list[str]) -> int:
    """Class of ``path``: the innermost folder named exactly like a label; else, as darknet, the label
    found in the file name (``12_airplane.png``), the longest when one found label contains the
    others (darknet's substring search over the whole path mislabels ``.../class_10/x`` as
    ``class_1``). -1 when no label, or several unrelated ones, match."""
    lookup = {name: i for i, name in enumerate(labels)}
    parts = [path_part_as_text(part) for part in Path(path).parts]  # non-UTF-8 names read as the labels are
    for part in reversed(parts[:-1]):
        if part in lookup:
            return lookup[part]
    name = parts[-1] if parts else ""
    hits = [i for i, label in enumerate(labels) if label and label in name]
    longest = [i for i in hits if not any(labels[i] != labels[j] and labels[i] in labels[j] for j in hits)]
    return longest[0] if len(longest) == 1 else -1
