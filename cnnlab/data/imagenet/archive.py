"""Reading tar members safely without extracting: what we refuse, and why.

We never call ``extract``; members are read into memory and written under names we build
ourselves. tarfile's extraction filters therefore do not apply, so the same rules (no absolute
paths, no ``..``, no links or device files) are checked here before a member is read at all.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import PurePosixPath

_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_reason(m: tarfile.TarInfo) -> str | None:
    """Why ``m`` must not be used, or None if it is a plain file with a relative, clean name."""
    if m.issym() or m.islnk():
        return "link"
    name = m.name.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in path"
    if not m.isfile():
        return "not a regular file"
    return None
