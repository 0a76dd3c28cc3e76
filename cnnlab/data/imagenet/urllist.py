"""The ImageNet URL list format: ``n01440764_1234<TAB>http://…`` per line, no header.

Real lists (fall11_urls.txt) contain lines in other encodings, lines without a URL and repeated
ids or URLs; those are counted, never fatal.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cnnlab.data.imagenet.report import Report
from cnnlab.errors import CnnlabError

IMAGE_ID = re.compile(r"^(n\d{8})_(\d+)$")


@dataclass(frozen=True)
class Entry:
    index: int  # position among selected entries: fixes the order duplicates are resolved in
    image_id: str
    wnid: str
    url: str


def read_wnids(path: Path) -> set[str]:
    if not path.exists():
        raise CnnlabError(f"--wnids {path} does not exist; give a file with one wnid per line")
    wnids = {w.strip().split()[0] for w in path.read_text(errors="replace").splitlines() if w.strip()}
    bad = sorted(w for w in wnids if not re.fullmatch(r"n\d{8}", w))
    if bad:
        raise CnnlabError(f"--wnids {path} has {bad[0]!r}, not a wnid like n01440764; one wnid per line")
    return wnids


def read_url_list(path: Path, wnids: set[str] | None = None, per_class: int | None = None) -> tuple[list[Entry], Report]:
    """Parse, filter and de-duplicate the list; the report holds bad_line and list duplicates."""
    if not path.is_file():
        raise CnnlabError(f"URL list {path} does not exist; pass a file of 'n01440764_1234<TAB>URL' lines")
    report = Report()
    seen_ids: set[str] = set()
    seen_urls: set[str] = set()
    per: Counter[str] = Counter()
    entries: list[Entry] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            raw = raw.strip()
            if not raw:
                continue
            parts = raw.split(None, 1)
            try:
                image_id = parts[0].decode("ascii")
                url = parts[1].decode("utf-8").strip() if len(parts) == 2 else ""
            except UnicodeDecodeError:
                report.add("bad_line", f"line {lineno}")
                continue
            m = IMAGE_ID.match(image_id)
            if m is None or not url or any(c.isspace() for c in url):
                report.add("bad_line", f"line {lineno}")
                continue
            wnid = m.group(1)
            if wnids is not None and wnid not in wnids:
                continue
            if image_id in seen_ids or url in seen_urls:
                report.add("duplicate", f"{image_id} (line {lineno})")
                continue
            seen_ids.add(image_id)
            seen_urls.add(url)
            if per_class is not None and per[wnid] >= per_class:
                continue
            per[wnid] += 1
            entries.append(Entry(len(entries), image_id, wnid, url))
    return entries, report
