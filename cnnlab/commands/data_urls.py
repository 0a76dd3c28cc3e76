"""``cnnlab data urls LIST --out DIR``: download an ImageNet URL list into class folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "urls"
HELP = "download an ImageNet URL list (n01440764_1234<TAB>URL) into DIR/train/<wnid>/ (resumable)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("list", type=Path, help="URL list file, e.g. fall11_urls.txt")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--format", choices=["folders"], default="folders", help="output layout (default: folders)")
    p.add_argument("--wnids", type=Path, help="only these classes (file with one wnid per line)")
    p.add_argument("--per-class", type=int, metavar="K", help="only the first K list entries of each class")
    p.add_argument("--val-per-class", type=int, default=0, metavar="N", help="move N kept images per class to DIR/val/ (fixed pick)")
    p.add_argument("--resize", type=int, metavar="SHORT", help="shrink so the shorter side is SHORT pixels (keeps aspect)")
    p.add_argument("--grayscale", choices=["keep", "rgb"], default="keep", help="keep gray images or convert to RGB")
    p.add_argument("--workers", type=int, default=32, help="concurrent downloads (default 32)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request step (default 10)")
    p.add_argument("--retries", type=int, default=2, help="extra attempts for transient errors (default 2)")
    p.add_argument("--max-bytes", type=int, default=20 * 1024 * 1024, help="refuse bodies larger than this (default 20 MiB)")
    p.add_argument("--placeholder-sha256", type=Path, help="file of sha256 hex digests of known placeholder images")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _positive(name: str, v: float | None, allow_zero: bool = False) -> None:
    from cnnlab.errors import CnnlabError

    if v is not None and (v < 0 or (v == 0 and not allow_zero)):
        raise CnnlabError(f"{name} {v} must be {'>= 0' if allow_zero else '> 0'}")


def run(args: argparse.Namespace) -> int:
    from cnnlab.data.imagenet.download import DownloadOptions, download
    from cnnlab.data.imagenet.urllist import read_url_list, read_wnids
    from cnnlab.errors import CnnlabError

    for name, v, zero in (("--per-class", args.per_class, False), ("--resize", args.resize, False),
                          ("--workers", args.workers, False), ("--timeout", args.timeout, False),
                          ("--retries", args.retries, True), ("--val-per-class", args.val_per_class, True),
                          ("--max-bytes", args.max_bytes, False)):
        _positive(name, v, zero)
    wnids = read_wnids(args.wnids) if args.wnids else None
    placeholders: frozenset[str] = frozenset()
    if args.placeholder_sha256:
        if not args.placeholder_sha256.exists():
            raise CnnlabError(f"--placeholder-sha256 {args.placeholder_sha256} does not exist")
        placeholders = frozenset(args.placeholder_sha256.read_text().split())
    entries, list_report = read_url_list(args.list, wnids, args.per_class)
    if not entries:
        raise CnnlabError(f"{args.list} has no usable entries (after --wnids/--per-class); expected 'n01440764_1234<TAB>URL' lines")
    opts = DownloadOptions(
        workers=args.workers, timeout=args.timeout, retries=args.retries, max_bytes=args.max_bytes,
        resize_short=args.resize, grayscale=args.grayscale, placeholder_sha256=placeholders,
        val_per_class=args.val_per_class, progress=not args.no_progress and sys.stderr.isatty(),
    )
    result = download(entries, args.out, opts, list_report)
    counts = ", ".join(f"{k}={v}" for k, v in result["counts"].items())
    print(f"{args.out}: kept {result['kept']} images in {result['classes']} classes ({counts}); details in {args.out / 'report.json'}")
    return 0
