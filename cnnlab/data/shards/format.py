"""The on-disk shard format: names, the per-shard index, the manifest (data, not behaviour).

A split folder holds ``NAME-000000.tar`` … (WebDataset: per sample ``KEY.cls``, ``KEY.jpg`` or
``KEY.png``, ``KEY.json``), one ``NAME-000000.idx.json`` per tar (byte offset and size of each
image, so a sample is one ``pread`` away without scanning the tar), ``settings.json`` (written
first: what is being written, so a re-run can tell "resume" from "different data") and, once every
shard is written, ``manifest.json``.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError

FORMAT = "cnnlab-shards/1"
MANIFEST = "manifest.json"
SETTINGS = "settings.json"
# Fixed tar header fields: the same samples give the same bytes on any machine, any day.
TAR_MTIME = 0
TAR_MODE = 0o644
TAR_HEADER = tarfile.BLOCKSIZE  # USTAR header of a short name: one 512-byte block


def shard_file(name: str, k: int) -> str:
    return f"{name}-{k:06d}.tar"


def index_file(name: str, k: int) -> str:
    return f"{name}-{k:06d}.idx.json"


@dataclass(frozen=True)
class Settings:
    """Everything that determines the bytes written; a re-run with different settings is refused."""

    source: str
    split: str
    samples: int  # in the source, before skipping unreadable ones
    classes: list[str]
    resize: int  # shorter side, 0 = keep
    quality: int
    image_format: str  # auto | jpg | png
    shard_size: int
    seed: int
    boxes: str  # CSV given with --boxes, "" for none
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, other: dict[str, Any]) -> list[str]:
        mine = self.to_dict()
        return [f"{k} {other.get(k)!r} → {mine[k]!r}" if k != "classes" else "classes"
                for k in mine if other.get(k) != mine[k]]  # fmt: skip


def tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, TAR_MTIME, TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


REWRITE = "re-run the same `cnnlab data shards` command (it rewrites damaged shards), or write them into a new --out"


def read_json(path: Path, fix: str = REWRITE) -> Any:
    """A shard folder's JSON file (manifest, settings, index); a missing, unreadable or corrupt one is
    a :class:`CnnlabError` naming the file and ``fix``, never a JSONDecodeError traceback."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CnnlabError(f"{path} is missing: {fix}") from None
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise CnnlabError(f"{path} is corrupt ({str(e)[:80]}): {fix}") from None


def read_index(path: Path) -> list[list]:
    """The ``samples`` of one ``NAME-k.idx.json``, checked entry by entry (``[key, offset, size, label, ext]``)."""
    doc = read_json(path)
    try:
        samples = doc["samples"]
        for key, offset, size, label, ext in samples:
            if not (isinstance(key, str) and isinstance(offset, int) and isinstance(size, int) and isinstance(label, int) and ext in ("jpg", "png")):
                raise ValueError(f"bad entry for {key!r}")
            if offset < 0 or size < 0 or label < 0:
                raise ValueError(f"negative number in the entry for {key!r}")
        if not isinstance(doc.get("skipped", []), list):
            raise ValueError("'skipped' is not a list")
    except (KeyError, TypeError, ValueError) as e:
        raise CnnlabError(f"{path} is corrupt ({str(e)[:80] or type(e).__name__}): {REWRITE}") from None
    return samples
