"""The byte loops of region decoding (:mod:`.jpeg`), compiled with numba.

Reading a JPEG's markers and cutting a region out of its entropy-coded data are loops over a few
hundred markers and offsets. In Python and numpy they took 55-75 µs per shard sample, a sixth of
it (a numpy call costs about a microsecond, and the cut took dozens); compiled, 8-11 µs with the
calls from Python (the cut of a whole 342 × 256 image is 2.6 µs of it). numba
compiles them at first use and keeps the machine code beside this file (``cache=True``), so later
processes and DataLoader workers load it in milliseconds.

The kernels run without bounds checks, and their bytes come from files: every index is checked
against the length before it is read or written, and a surprise returns an error code.
"""

from __future__ import annotations

import numba
import numpy as np

# parse_header's status codes; jpeg.parse_layout turns them into messages.
OK, NO_SOI, BAD_MARKER, TRUNCATED_SOF, SOS_BEFORE_SOF, NO_SOS = range(6)
TABLE_MARKER = 0xE9  # APP9: cnnlab's table of restart-marker offsets (jpeg.add_marker_table)
TABLE_TAG = np.frombuffer(b"cnnlab-rst\0", dtype=np.uint8)  # identifies our segment among other APP9 uses
_EXIF_TAG = np.frombuffer(b"Exif\0\0", dtype=np.uint8)
_SOF_ANY = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _u16(data, at: int) -> int:
    return (np.int64(data[at]) << 8) | np.int64(data[at + 1])


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _starts_with(data, at: int, end: int, tag) -> bool:
    """Whether ``data[at:end]`` (``end`` ≤ its length) starts with the bytes of ``tag``."""
    if at + len(tag) > end:
        return False
    for i in range(len(tag)):
        if data[at + i] != tag[i]:
            return False
    return True


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _failed(status: int, at: int):
    """parse_header's answer for a header it cannot read (same types as a good one)."""
    return status, at, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, False, False, 0


@numba.njit(cache=True, nogil=True, boundscheck=False)
def parse_header(data):
    """The markers up to the scan: ``(status, at, width, height, channels, hmax, vmax, sof_at,
    scan_start, sos_at, table_at, table_count, exif, baseline, restart)``; ``at`` is where a bad
    marker was. ``table_count`` > 0: 4-byte offsets, < 0: 2-byte (0: no table)."""
    n = len(data)
    width = height = channels = sof_at = restart = table_at = table_count = 0
    hmax = vmax = 1
    exif = baseline = False
    if n < 2 or data[0] != 0xFF or data[1] != 0xD8:
        return _failed(NO_SOI, 0)
    pos = 2
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return _failed(BAD_MARKER, pos)
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        end = pos + 2 + _u16(data, pos + 2)  # the segment's end (its length counts itself)
        if marker in _SOF_ANY:
            # SOF: length(2) precision(1) height(2) width(2) components(1), then id/sampling/table each.
            if pos + 10 > n:
                return _failed(TRUNCATED_SOF, pos)
            height, width, channels = _u16(data, pos + 5), _u16(data, pos + 7), np.int64(data[pos + 9])
            if pos + 10 + 3 * channels > n or channels == 0:
                return _failed(TRUNCATED_SOF, pos)
            sof_at = pos + 5
            baseline = marker == 0xC0 or marker == 0xC1
            hmax = vmax = 1
            for c in range(channels):
                sampling = np.int64(data[pos + 11 + 3 * c])
                hmax, vmax = max(hmax, sampling >> 4), max(vmax, sampling & 0x0F)
        # APPn payloads start after the length; ours has a width byte after the tag.
        elif marker == TABLE_MARKER and end <= n and _starts_with(data, pos + 4, end - 1, TABLE_TAG):
            at = pos + 4 + len(TABLE_TAG)  # the width byte (2 or 4 bytes per offset), then the offsets
            table_at = at + 1
            table_count = (end - table_at) // 4 if data[at] == 4 else -((end - table_at) // 2)
        elif marker == 0xE1 and _starts_with(data, pos + 4, min(end, n), _EXIF_TAG):
            exif = True
        elif marker == 0xDD and pos + 6 <= n:  # DRI: restart interval in MCUs
            restart = _u16(data, pos + 4)
        elif marker == 0xDA:  # SOS: entropy-coded data follows the segment
            if width == 0 or height == 0:
                return _failed(SOS_BEFORE_SOF, pos)
            if channels == 1:  # a single-component scan is not interleaved: 8×8 blocks
                hmax = vmax = 1
            return OK, pos, width, height, channels, hmax, vmax, sof_at, end, pos, table_at, table_count, exif, baseline, restart
        pos = end
    return _failed(NO_SOS, pos)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _offset(table, table_at: int, width: int, k: int) -> int:
    """Entry ``k`` of a table of big-endian offsets, ``width`` bytes each, from ``table_at``."""
    at = table_at + k * width
    if width == 2:
        return _u16(table, at)
    return (_u16(table, at) << 16) | _u16(table, at + 2)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _copy(src, start: int, out, at: int, n: int) -> None:
    # Indexing views from 0 lets LLVM vectorise the copy (slice assignment goes through a generic
    # overlap-safe path, 15x slower).
    a, b = src[start : start + n], out[at : at + n]
    for i in range(n):
        b[i] = a[i]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _is_rst(data, at: int) -> bool:
    return data[at] == 0xFF and (data[at + 1] & 0xF8) == 0xD0


@numba.njit(cache=True, nogil=True, boundscheck=False)
def cut_region(data, out, table, table_at: int, width: int, count: int, scan_start: int, n_cols: int,
               rows: tuple, cols: tuple, sof_at: int, size: tuple) -> int:  # fmt: skip
    """Write into ``out`` (at least ``len(data)`` bytes) the JPEG made of restart intervals
    ``rows[0]..rows[1]`` × ``cols[0]..cols[1]`` of ``data`` (``count`` intervals, ``n_cols`` a row);
    return its length, or -1 when the markers are not where ``table`` says.

    ``table[table_at:]``: ``count - 1`` big-endian offsets (``width`` bytes each) from
    ``scan_start`` of the RSTn ending each interval but the last (which ends at EOI). The header is copied with SOF's
    height and width set to ``size = (h, w)``; each kept row is one copy, its markers renumbered
    RST0, RST1, … in the new order, and the last becomes EOI."""
    n = len(data)
    if scan_start + 2 > n or table_at < 0 or len(table) < table_at + (count - 1) * width or len(out) < n or sof_at + 4 > scan_start:
        return -1
    _copy(data, 0, out, 0, scan_start)
    out[sof_at], out[sof_at + 1] = size[0] >> 8, size[0] & 0xFF
    out[sof_at + 2], out[sof_at + 3] = size[1] >> 8, size[1] & 0xFF
    at, number, done = scan_start, 0, scan_start  # done: source bytes before it are used
    for r in range(rows[0], rows[1] + 1):
        k0, k1 = r * n_cols + cols[0], r * n_cols + cols[1]
        start = scan_start
        if k0 > 0:
            m = scan_start + _offset(table, table_at, width, k0 - 1)
            if m + 2 > n or not _is_rst(data, m):
                return -1
            start = m + 2
        end = n - 2 if k1 == count - 1 else scan_start + _offset(table, table_at, width, k1)  # the row's last marker
        if start < done or end + 2 > n or end < start or at + end + 2 - start > len(out):
            return -1
        _copy(data, start, out, at, end + 2 - start)
        shift = at - start
        for k in range(k0, k1 + 1):
            m = end if k == k1 else scan_start + _offset(table, table_at, width, k)
            if m < start or m > end or not (_is_rst(data, m) or (m == n - 2 and data[m] == 0xFF and data[m + 1] == 0xD9)):
                return -1
            out[m + shift + 1] = 0xD0 + (number & 7)
            number += 1
        at += end + 2 - start
        done = end + 2
    out[at - 1] = 0xD9  # the last kept marker becomes EOI
    return at


def compile_now() -> None:
    """Compile the kernels (or load them from numba's cache) with the argument types the loader
    passes, now: called before DataLoader workers fork, so they inherit the machine code."""
    parse_header(b"")
    cut_region(b"", np.empty(0, np.uint8), b"", 0, 2, 1, 0, 1, (0, 0), (0, 0), 0, (1, 1))
