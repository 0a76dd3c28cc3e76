"""The one reader for darknet's text files: ``.cfg``, ``.data``, ``.names``/labels and image lists.

Darknet reads these as bytes (``fgetl``) and accepts any of them; a cfg with a Latin-1 comment or a
names file saved by an old editor works there, so it works here too, without a word:

* Each line is decoded as UTF-8 (a leading UTF-8 byte-order mark is dropped, as editors on Windows
  write one and darknet would choke on it in ``[net]``).
* A line that is not valid UTF-8 is, in text files (cfg, .data, names), read as Latin-1: every byte
  is a character, so comments are ignored as darknet ignores them and a name prints as the
  legacy-encoded text it most likely is.
* In image lists a line that is not valid UTF-8 keeps its bytes: it is decoded the way Python
  decodes file names (``os.fsdecode``, UTF-8 with ``surrogateescape``), so opening it reaches the
  very file darknet would open.

Reading errors (missing file, permission) stay ``OSError`` so each caller names the file and the
option it came from.
"""

from __future__ import annotations

import os
from pathlib import Path

_BOM = b"\xef\xbb\xbf"


def _decode_line(raw: bytes, paths: bool) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return os.fsdecode(raw) if paths else raw.decode("latin-1")


def decode(data: bytes, paths: bool = False) -> str:
    """Bytes of a darknet text file → text, by the rules above (line by line)."""
    data = data.removeprefix(_BOM)
    try:
        return data.decode("utf-8")  # the common case, whole
    except UnicodeDecodeError:
        return "\n".join(_decode_line(line, paths) for line in data.split(b"\n"))


def split_lines(text: str) -> list[str]:
    """Lines as darknet's ``fgetl`` sees them: split at ``\n`` only (``str.splitlines`` would also split at
    ``\x85``, which is "…" in a Latin-1/cp1252 name or comment), a trailing ``\r`` dropped."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def path_part_as_text(part: str) -> str:
    """A file or folder name from an image list, as a names-file line with the same bytes reads: its
    Latin-1 reading when the bytes are not UTF-8, so labels and folders saved in one legacy encoding match.
    Also how such a path is printed (darknet prints the bytes; a text stream cannot print undecodable ones)."""
    raw = os.fsencode(part)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_text(path: str | Path) -> str:
    """A cfg, .data or names file as text; raises ``OSError`` only."""
    return decode(Path(path).read_bytes())


def read_lines(path: str | Path, paths: bool = False) -> list[str]:
    """Lines without their line ends (``\\n``, ``\\r\\n``); with ``paths`` an image list, blank lines and
    surrounding spaces dropped."""
    lines = split_lines(decode(Path(path).read_bytes(), paths))
    return [line.strip() for line in lines if line.strip()] if paths else lines
