"""Darknet classifier lists for a prepared class-folder tree, so darknet itself can train on it.

Darknet labels an image by the first label string that occurs anywhere in its path, so every path
must contain its own wnid and no other; that is checked here rather than discovered as bad accuracy.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.data.imagenet.synsets import lemmas
from cnnlab.errors import CnnlabError

IMAGE_EXTS = (".jpeg", ".jpg", ".png")


def _images(split_dir: Path, classes: list[str]) -> list[Path]:
    out: list[Path] = []
    for wnid in classes:
        d = split_dir / wnid
        if d.is_dir():
            out.extend(sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")))
    return out


def _names(root: Path, classes: list[str]) -> list[str]:
    """Readable names: synsets.tsv's lemma if written, else timm's, else the wnid itself."""
    table: dict[str, str] = {}
    tsv = root / "synsets.tsv"
    if tsv.exists():
        for line in tsv.read_text(encoding="utf-8").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 3:
                table[parts[1]] = parts[2]
    lem = lemmas()
    return [(table.get(w) or lem.get(w) or w).split(",")[0].strip() or w for w in classes]


def write_darknet_lists(root: Path, name: str = "imagenet") -> dict[str, int | str]:
    root = root.resolve()
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir():
        raise CnnlabError(f"{root} has no train/ folder; run `cnnlab data ilsvrc` or `cnnlab data urls` first")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise CnnlabError(f"{train_dir} has no class folders; prepare the data first")
    # A class name inside the root path would label every image with it.
    inside = [c for c in classes if c in str(root)]
    if inside:
        raise CnnlabError(f"the folder path {root} contains the class name {inside[0]!r}; darknet would mislabel every image — move the data")
    train = _images(train_dir, classes)
    valid = _images(val_dir, classes) if val_dir.is_dir() else []
    for p in train + valid:
        rel = str(p.relative_to(root))
        hits = [c for c in classes if c in rel]
        if hits != [p.parent.name]:
            raise CnnlabError(f"{p} matches labels {hits}; darknet needs exactly its own class in the path — rename it")
    (root / "labels.txt").write_text("".join(f"{c}\n" for c in classes))
    (root / "names.list").write_text("".join(f"{n}\n" for n in _names(root, classes)))
    (root / "train.list").write_text("".join(f"{p}\n" for p in train))
    (root / "valid.list").write_text("".join(f"{p}\n" for p in valid))
    (root / "backup").mkdir(exist_ok=True)
    data_file = root / f"{name}.data"
    data_file.write_text(
        f"classes={len(classes)}\n"
        f"train={root / 'train.list'}\n"
        f"valid={root / 'valid.list'}\n"
        f"labels={root / 'labels.txt'}\n"
        f"names={root / 'names.list'}\n"
        f"backup={root / 'backup'}\n"
        "top=5\n"
    )
    return {"classes": len(classes), "train": len(train), "valid": len(valid), "data": str(data_file)}
