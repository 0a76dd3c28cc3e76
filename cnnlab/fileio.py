"""Files written so that a kill never leaves half of one: temp file + rename, on the same filesystem."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError


def write_json_atomic(path: Path, obj: Any) -> None:
    """Temp file + rename, so a kill never leaves half a JSON file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_file_atomic(path: Path, data: bytes) -> None:
    """``data`` to ``path`` via a temp file beside it (fsync, rename), with the permissions the user's umask gives.

    The temp file is created with mode 0o666 and the kernel applies the umask (``tempfile.mkstemp``
    makes 0600, which left every .weights file private whatever the umask); reading the umask would
    need ``os.umask(0)``, a process-wide change another thread could see.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name beside {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write via ``tmp_dir`` (same filesystem, outside the class folders) and rename into place.

    Both folders are created on first need only: a ``mkdir -p`` per file cost 12% of a download's CPU.
    """
    tmp = tmp_dir / f"{os.getpid()}-{id(data):x}-{path.name}"
    try:
        tmp.write_bytes(data)
    except FileNotFoundError:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
    try:
        os.replace(tmp, path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """UTF-8 text via a temp file + rename: readers see the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # disk full, Ctrl-C: no temp file left beside the user's
        raise


def refuse_changes(texts: dict[Path, str], force: bool) -> None:
    """Nothing a user has is replaced without ``--force``: one line naming the first existing file
    whose content would change (a file that would be rewritten identically is no loss)."""
    changed = [p for p, text in texts.items() if p.exists() and (not p.is_file() or p.read_bytes() != text.encode("utf-8"))]
    if changed and not force:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise CnnlabError(f"{changed[0]}{more} exists: pass --force to replace it, or write elsewhere")
