"""Files written so that a kill never leaves half of one: temp file + rename, on the same filesystem."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cnnlab.errors import CnnlabError


class WriteError(CnnlabError):
    """A file could not be written (disk full, file too large, read-only folder, no permission).

    One line naming the file and the cause; the user's old file, if any, is untouched and no
    temporary file is left beside it.
    """

    exit_code = 1


def write_error(path: Path, e: OSError) -> WriteError:
    """One line: the file, the system's reason, and what to do about it."""
    fix = {errno.ENOSPC: "free some space or write elsewhere", errno.EFBIG: "raise the file-size limit (ulimit -f) or write elsewhere",
           errno.EDQUOT: "free some of your quota or write elsewhere"}.get(e.errno or 0, "write elsewhere")  # fmt: skip
    return WriteError(f"cannot write {path}: {e.strerror or e}; nothing was replaced: {fix}")


class _Recorder:
    """A file that remembers the OSError of a failed write: ``torch.save`` turns it into a
    ``RuntimeError("unexpected pos ...")`` that no longer says the disk is full."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


@contextmanager
def atomic_writer(path: Path) -> Iterator[IO[bytes]]:
    """Open a hidden temp file beside ``path`` (``.NAME.PID.RANDOM.tmp``); on success fsync and rename it
    onto ``path``. Readers and a later run see the old file or the new one, never a part.

    On any failure (disk full, Ctrl-C, an exception of the writer) the temp file is removed; an
    ``OSError`` becomes one :class:`WriteError` line naming ``path``. The temp file is created with mode
    0o666 and the kernel applies the umask (``tempfile.mkstemp`` makes 0600, which left every .weights
    file private whatever the umask).
    """
    path = Path(path)
    made: list[Path] = []  # the temp file's name, known before it exists: a Ctrl-C right after the open still removes it
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = _create_temp(path, made)
        except OSError as e:
            raise write_error(path, e) from None
        f = os.fdopen(fd, "wb")
        rec = _Recorder(f)
        try:
            yield rec  # type: ignore[misc]
        except BaseException:
            _close_quietly(f)  # closing flushes the buffer: a second EFBIG would hide the first error
            if rec.error is not None:  # the write failed, whatever the writer made of it
                raise write_error(path, rec.error) from None
            raise  # the writer's own error (e.g. reading its input), Ctrl-C: not ours to rename
        try:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(made[0], path)
        except OSError as e:
            _close_quietly(f)
            raise write_error(path, e) from None
    except BaseException:
        for tmp in made:
            tmp.unlink(missing_ok=True)  # disk full, Ctrl-C, a bug: no temp file left beside the user's
        raise


def _close_quietly(f: IO[bytes]) -> None:
    try:
        f.close()
    except OSError:
        pass


def _create_temp(path: Path, made: list[Path]) -> int:
    for _ in range(100):
        made[:] = [path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")]
        try:
            return os.open(made[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            made.clear()  # another's file: never ours to remove
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {path}")


def remove_stale_temps(folder: Path) -> int:
    """Delete the temp files :func:`atomic_writer` left in ``folder`` when its process was killed
    (SIGKILL, power loss): ``.NAME.PID.RANDOM.tmp`` whose PID is no longer running. Returns how many."""
    removed = 0
    for p in folder.glob(".*.tmp"):
        parts = p.name.rsplit(".", 3)  # [".NAME", PID, RANDOM, "tmp"]
        if len(parts) == 4 and parts[1].isdecimal() and not _alive(int(parts[1])):
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_file_atomic(path: Path, data: bytes) -> None:
    """``data`` to ``path`` via :func:`atomic_writer` (hidden temp file, fsync, rename)."""
    with atomic_writer(path) as f:
        f.write(data)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Temp file + rename, so a kill never leaves half a JSON file behind."""
    write_file_atomic(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write via ``tmp_dir`` (same filesystem, outside the class folders) and rename into place.

    Both folders are created on first need only: a ``mkdir -p`` per file cost 12% of a download's CPU.
    """
    tmp = tmp_dir / f"{os.getpid()}-{id(data):x}-{path.name}"
    try:
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
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """UTF-8 text via a temp file + rename: readers see the old file or the new one, never a part."""
    write_file_atomic(path, text.encode("utf-8"))


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` if it is a file (so ``path`` can never be written), else None."""
    folder = next((p for p in Path(path).parents if p.exists()), None)
    return folder if folder is not None and not folder.is_dir() else None


def refuse_changes(texts: dict[Path, str], force: bool) -> None:
    """Nothing a user has is replaced without ``--force``: one line naming the first existing file
    whose content would change (a file that would be rewritten identically is no loss)."""
    changed = [p for p, text in texts.items() if p.exists() and (not p.is_file() or p.read_bytes() != text.encode("utf-8"))]
    if changed and not force:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise CnnlabError(f"{changed[0]}{more} exists: pass --force to replace it, or write elsewhere")


def user_cache_dir() -> Path:
    """This user's cnnlab cache: ``$CNNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnlab``, else
    ``~/.cache/cnnlab`` (per user: nothing another user wrote is ever loaded from it)."""
    folder = os.environ.get("CNNLAB_CACHE_DIR")
    if not folder:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = str(Path(xdg) / "cnnlab")
    return Path(folder)
