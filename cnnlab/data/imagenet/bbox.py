"""``cnnlab data bbox``: ImageNet's PASCAL VOC XML boxes → one CSV, with every fix counted.

Quirks in the released XMLs: ``<filename>`` sometimes reads ``%s`` (so the image name comes from
the XML's own file name), some boxes have min > max, some run past the image, a few are empty.
"""

from __future__ import annotations

import csv
import io
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path, PurePath
from typing import Iterator

from cnnlab.data.imagenet.archive import unsafe_reason
from cnnlab.errors import CnnlabError
from cnnlab.fileio import write_text_atomic

HEADER = ["filename", "wnid", "xmin", "ymin", "xmax", "ymax"]


def _iter_xml(source: Path, fixes: Counter[str]) -> Iterator[tuple[str, bytes]]:
    """(xml file name, bytes) from a folder tree or a tar(.gz) of XMLs (nested class tars too)."""
    if source.is_dir():
        for p in sorted(source.rglob("*.xml")):
            yield p.name, p.read_bytes()
        return
    try:
        tf = tarfile.open(source, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise CnnlabError(f"cannot read bbox archive {source}: {e}; pass a folder or tar of XML files") from None
    with tf:
        yield from _iter_tar(tf, fixes)


def _iter_tar(tf: tarfile.TarFile, fixes: Counter[str]) -> Iterator[tuple[str, bytes]]:
    for m in tf:
        if m.isdir():
            continue
        if unsafe_reason(m) is not None:
            fixes["unsafe_member"] += 1
            continue
        f = tf.extractfile(m)
        if f is None:
            continue
        name = PurePath(m.name).name
        if name.endswith(".xml"):
            yield name, f.read()
        elif name.endswith((".tar", ".tar.gz", ".tgz")):
            try:
                with tarfile.open(fileobj=io.BytesIO(f.read()), mode="r:*") as inner:
                    yield from _iter_tar(inner, fixes)
            except tarfile.TarError:
                fixes["bad_archive"] += 1


def _num(el: ET.Element | None) -> float | None:
    if el is None or el.text is None:
        return None
    try:
        return float(el.text.strip())
    except ValueError:
        return None


def parse_xml(xml_name: str, data: bytes, fixes: Counter[str]) -> list[tuple[str, str, float, float, float, float, int, int]]:
    """Boxes of one XML as (filename, wnid, xmin, ymin, xmax, ymax, width, height), fixed and counted."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        fixes["bad_xml"] += 1
        return []
    stem = xml_name[: -len(".xml")] if xml_name.endswith(".xml") else xml_name
    filename = f"{stem}.JPEG"
    field = (root.findtext("filename") or "").strip()
    if PurePath(field).stem != stem:
        fixes["filename_field_ignored"] += 1  # e.g. '%s'; the XML's own name is authoritative
    width = _num(root.find("size/width"))
    height = _num(root.find("size/height"))
    if not width or not height:
        fixes["no_image_size"] += 1
        width = height = None
    rows = []
    for obj in root.iter("object"):
        wnid = (obj.findtext("name") or "").strip() or stem.split("_")[0]
        box = obj.find("bndbox")
        coords = [_num(box.find(k)) if box is not None else None for k in ("xmin", "ymin", "xmax", "ymax")]
        if any(c is None for c in coords):
            fixes["dropped_malformed"] += 1
            continue
        xmin, ymin, xmax, ymax = (float(c) for c in coords)  # type: ignore[arg-type]
        if xmin > xmax:
            xmin, xmax = xmax, xmin
            fixes["swapped_x"] += 1
        if ymin > ymax:
            ymin, ymax = ymax, ymin
            fixes["swapped_y"] += 1
        if width is not None and height is not None:
            # Clamp to the image rectangle [0, width] x [0, height] (ImageNet's boxes use both 0-
            # and 1-based corners, so the edge value itself is allowed).
            c = [min(max(xmin, 0.0), width), min(max(ymin, 0.0), height),
                 min(max(xmax, 0.0), width), min(max(ymax, 0.0), height)]
            if c != [xmin, ymin, xmax, ymax]:
                fixes["clamped"] += 1
            xmin, ymin, xmax, ymax = c
        if xmax <= xmin or ymax <= ymin:
            fixes["dropped_empty"] += 1
            continue
        rows.append((filename, wnid, xmin, ymin, xmax, ymax, int(width or 0), int(height or 0)))
        fixes["boxes"] += 1
    fixes["files"] += 1
    return rows


def convert_bboxes(source: Path, out_csv: Path, relative: bool = False) -> dict[str, int]:
    """Write ``out_csv`` (absolute pixels, or fractions of the image size with ``relative``)."""
    if not source.exists():
        raise CnnlabError(f"bbox source {source} does not exist; pass a folder or tar of PASCAL VOC XML files")
    fixes: Counter[str] = Counter()
    rows = []
    for name, data in _iter_xml(source, fixes):
        rows.extend(parse_xml(name, data, fixes))
    rows.sort()
    f = io.StringIO(newline="")  # the whole CSV in memory (a few MB for ILSVRC), then one atomic write
    w = csv.writer(f)
    w.writerow(HEADER)
    for filename, wnid, x0, y0, x1, y1, width, height in rows:
        if relative:
            if not width or not height:
                fixes["dropped_no_size_for_relative"] += 1
                continue
            w.writerow([filename, wnid, f"{x0 / width:.6f}", f"{y0 / height:.6f}", f"{x1 / width:.6f}", f"{y1 / height:.6f}"])
        else:
            w.writerow([filename, wnid, *(_fmt(v) for v in (x0, y0, x1, y1))])
    write_text_atomic(out_csv, f.getvalue())
    if fixes["files"] == 0:
        raise CnnlabError(f"no PASCAL VOC XML files found in {source}; pass the ILSVRC2012_bbox_*.tar.gz or its folder")
    return dict(sorted(fixes.items()))


def _fmt(v: float) -> str:
    return str(int(v)) if v == int(v) else f"{v:.2f}"
