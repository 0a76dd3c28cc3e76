"""Darknet classifier lists for a prepared class-folder tree, so darknet itself can train on it.

Darknet labels an image by the first label string that occurs anywhere in its path, so every path
must contain its own wnid and no other; that is checked here rather than discovered as bad accuracy.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.data.imagenet.synsets import lemmas
from cnnlab.errors import CnnlabError
from cnnlab.fileio import refuse_changes, write_text_atomic

IMAGE_EXTS = (".jpeg", ".jpg", ".png")


def _listable(name: str) -> bool:
    """A name that can be one line of a UTF-8 list: valid UTF-8 (undecodable bytes come back from
    the OS as surrogates) and no line break."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\n" not in name and "\r" not in name


def _images(split_dir: Path, classes: list[str], unlisted: list[str]) -> list[Path]:
    """Image files per class, sorted; names that cannot be a list line go to ``unlisted``."""
    out: list[Path] = []
    for wnid in classes:
        d = split_dir / wnid
        if d.is_dir():
            for p in sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")):
                (out.append(p) if _listable(str(p)) else unlisted.append(repr(str(p.relative_to(split_dir.parent)))))
    return out


def _names(root: Path, classes: list[str]) -> list[str]:
    """Readable names: synsets.tsv's lemma if written, else timm's, else the wnid itself."""
    table: dict[str, str] = {}
    tsv = root / "synsets.tsv"
    if tsv.exists():
        for line in tsv.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:  # names only label output
            parts = line.split("\t")
            if len(parts) >= 3:
                table[parts[1]] = parts[2]
    lem = lemmas()
    return [(table.get(w) or lem.get(w) or w).split(",")[0].strip() or w for w in classes]


def write_darknet_lists(root: Path, name: str = "imagenet", force: bool = False, warn=print) -> dict[str, int | str]:
    """Write the lists and ``NAME.data`` for ``root``: everything is composed first, then each file
    is written whole (temp + rename), so a failure leaves the old files or none; existing ones are
    replaced only with ``force`` (unless they would not change). File names that cannot be a list line are skipped, counted and
    named in one warning (``warn``), as darknet could not open them anyway."""
    root = root.resolve()
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir():
        raise CnnlabError(f"{root} has no train/ folder; run `cnnlab data ilsvrc` or `cnnlab data urls` first")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    odd = [c for c in classes if not _listable(c)]
    if odd:
        raise CnnlabError(f"class folder {odd[0]!r} in {train_dir} is not a valid UTF-8 name; rename it (labels.txt is UTF-8 text)")
    if not _listable(str(root)):
        raise CnnlabError(f"the folder path {str(root)!r} is not valid UTF-8; move the data to a folder with a UTF-8 name")
    if not classes:
        raise CnnlabError(f"{train_dir} has no class folders; prepare the data first")
    # A class name inside the root path would label every image with it.
    inside = [c for c in classes if c in str(root)]
    if inside:
        raise CnnlabError(f"the folder path {root} contains the class name {inside[0]!r}; darknet would mislabel every image — move the data")
    data_file = root / f"{name}.data"
    outputs = [root / "labels.txt", root / "names.list", root / "train.list", root / "valid.list", data_file]
    unlisted: list[str] = []
    train = _images(train_dir, classes, unlisted)
    valid = _images(val_dir, classes, unlisted) if val_dir.is_dir() else []
    for p in train + valid:
        rel = str(p.relative_to(root))
        hits = [c for c in classes if c in rel]
        if hits != [p.parent.name]:
            raise CnnlabError(f"{p} matches labels {hits}; darknet needs exactly its own class in the path — rename it")
    texts = {
        outputs[0]: "".join(f"{c}\n" for c in classes),
        outputs[1]: "".join(f"{n}\n" for n in _names(root, classes)),
        outputs[2]: "".join(f"{p}\n" for p in train),
        outputs[3]: "".join(f"{p}\n" for p in valid),
        data_file: (
            f"classes={len(classes)}\n"
            f"train={root / 'train.list'}\n"
            f"valid={root / 'valid.list'}\n"
            f"labels={root / 'labels.txt'}\n"
            f"names={root / 'names.list'}\n"
            f"backup={root / 'backup'}\n"
            "top=5\n"
        ),
    }
    refuse_changes(texts, force)  # labels.txt from `data ilsvrc`/`data urls` is the same text: no conflict
    if unlisted:
        warn(f"warning: skipped {len(unlisted)} image(s) whose file name is not valid UTF-8 or has a line break (e.g. {unlisted[0]}); rename them to list them")
    (root / "backup").mkdir(exist_ok=True)
    for path, text in texts.items():  # the .data file last: it names the lists, which then exist whole
        write_text_atomic(path, text)
    return {"classes": len(classes), "train": len(train), "valid": len(valid), "skipped": len(unlisted), "data": str(data_file)}
