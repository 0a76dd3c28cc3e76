"""The ILSVRC2012 devkit: ``data/meta.mat`` (synsets) and the validation ground truth.

The devkit numbers classes by ``ILSVRC2012_ID`` (1..1000 for the leaf synsets), which is *not* the
sorted-wnid order models are trained with; everything here maps IDs to wnids so nothing downstream
ever sees a devkit ID.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from cnnlab.errors import CnnlabError

META_NAME = "meta.mat"
GT_NAME = "ILSVRC2012_validation_ground_truth.txt"


@dataclass(frozen=True)
class Synset:
    ilsvrc_id: int
    wnid: str
    words: str
    gloss: str


@dataclass(frozen=True)
class Devkit:
    synsets: list[Synset]  # the leaf synsets (the classes), in devkit-ID order
    val_ids: list[int]  # val_ids[i] = ILSVRC2012_ID of ILSVRC2012_val_{i+1:08d}
    _id_map: dict[int, str] = field(default_factory=dict, repr=False, compare=False)

    def id_to_wnid(self) -> dict[int, str]:
        return {s.ilsvrc_id: s.wnid for s in self.synsets}

    @property
    def wnids(self) -> list[str]:
        return sorted(s.wnid for s in self.synsets)

    def val_wnid(self, filename: str) -> str | None:
        """wnid of a val file name like ``ILSVRC2012_val_00000001.JPEG`` (None if not in the truth)."""
        number = _val_number(filename)
        if number is None or not 1 <= number <= len(self.val_ids):
            return None
        return self._id_map.get(self.val_ids[number - 1])

    def __post_init__(self) -> None:
        object.__setattr__(self, "_id_map", self.id_to_wnid())  # cached: val_wnid runs 50k times


def _val_number(filename: str) -> int | None:
    stem = Path(filename).name.split(".")[0]
    prefix, _, digits = stem.rpartition("_")
    if not prefix.endswith("val") or not digits.isdecimal():
        return None
    return int(digits)


def _scalar(v: object) -> object:
    """loadmat(squeeze_me=True) gives 0-d arrays or plain scalars depending on the field."""
    while isinstance(v, np.ndarray):
        if v.size != 1:
            return v
        v = v.reshape(()).item() if v.dtype != object else v.reshape(())[()]
    return v


def parse_meta(data: bytes) -> list[Synset]:
    """Leaf synsets (``num_children == 0``) from ``meta.mat`` bytes, in devkit-ID order."""
    try:
        mat = loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=True)
        table = np.atleast_1d(mat["synsets"])
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise CnnlabError(f"devkit meta.mat has no readable 'synsets' table ({e}); pass the ILSVRC2012_devkit_t12.tar.gz") from None
    names = table.dtype.names or ()
    need = ("ILSVRC2012_ID", "WNID", "num_children")
    if any(n not in names for n in need):
        raise CnnlabError(f"devkit meta.mat 'synsets' lacks fields {need}; pass the ILSVRC2012_devkit_t12.tar.gz")
    leaves = []
    for row in table:
        if int(_scalar(row["num_children"])) != 0:
            continue
        words = str(_scalar(row["words"])) if "words" in names else ""
        gloss = str(_scalar(row["gloss"])) if "gloss" in names else ""
        leaves.append(Synset(int(_scalar(row["ILSVRC2012_ID"])), str(_scalar(row["WNID"])), words, gloss))
    leaves.sort(key=lambda s: s.ilsvrc_id)
    if not leaves:
        raise CnnlabError("devkit meta.mat lists no leaf synsets (num_children == 0); is it the ILSVRC2012 devkit?")
    return leaves


def parse_ground_truth(text: str) -> list[int]:
    ids = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if not line.isdecimal():
            raise CnnlabError(f"{GT_NAME} line {n} is {line!r}, not a class ID; pass the original devkit")
        ids.append(int(line))
    return ids


def read_devkit(path: Path) -> Devkit:
    """Read both files straight from the devkit tar(.gz) (or an extracted devkit folder)."""
    meta = gt = None
    if path.is_dir():
        for p in path.rglob("*"):
            if p.name == META_NAME:
                meta = p.read_bytes()
            elif p.name == GT_NAME:
                gt = p.read_bytes()
    else:
        try:
            with tarfile.open(path, "r:*") as tf:
                for m in tf:
                    name = Path(m.name).name
                    if m.isfile() and name in (META_NAME, GT_NAME):
                        f = tf.extractfile(m)
                        assert f is not None
                        if name == META_NAME:
                            meta = f.read()
                        else:
                            gt = f.read()
        except (tarfile.TarError, OSError) as e:
            raise CnnlabError(f"cannot read devkit {path}: {e}; pass ILSVRC2012_devkit_t12.tar.gz") from None
    if meta is None or gt is None:
        missing = [n for n, v in ((META_NAME, meta), (GT_NAME, gt)) if v is None]
        raise CnnlabError(f"devkit {path} lacks {', '.join(missing)}; pass ILSVRC2012_devkit_t12.tar.gz")
    synsets = parse_meta(meta)
    val_ids = parse_ground_truth(gt.decode("ascii", "replace"))
    known = {s.ilsvrc_id for s in synsets}
    unknown = sorted(set(val_ids) - known)
    if unknown:
        raise CnnlabError(f"{GT_NAME} uses class IDs {unknown[:5]} that meta.mat does not define; devkit files do not match")
    return Devkit(synsets, val_ids)
