"""Write any :class:`ImageSource` split as WebDataset tar shards, deterministically and resumably.

* **Order.** Samples are shuffled once with ``seed`` before sharding, so every shard mixes the
  classes (class folders list one class after another) and shard-level shuffling is enough later.
* **Determinism.** Images are decoded, resized (shorter side to ``resize``, never enlarged) and
  re-encoded by Pillow with fixed options; tar headers have fixed mtime/uid/gid/mode and members are
  written in sorted order. The same source and settings give byte-identical shards.
* **Atomic and resumable.** Each shard is written to a hidden ``.NAME.*.tmp`` and renamed, then its index; a shard
  counts as done when its index exists. A killed writer re-run with the same settings skips the
  finished shards and rewrites the rest; other settings, or a folder that is not ours, are refused.
* **Bad samples** (``BadImage`` from the source) are skipped, counted and listed in the manifest.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import tarfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path, PurePath

import numpy as np
import torch

from cnnlab.data.shards import format as fmt
from cnnlab.data.shards.fields import IMAGE_FORMATS, LABEL, SIDECAR, BoxesCodec, ImageField, Sidecar
from cnnlab.data.sources.base import BadImage, ImageSource
from cnnlab.data.sources.bbox_csv import BboxCsv, read_bbox_csv
from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_writer, remove_stale_temps, write_json_atomic

# The state a worker process needs; set once per process (fork inherits it, nothing is pickled).
_JOB: dict = {}


def _write_shard(k: int) -> None:
    source: ImageSource = _JOB["source"]
    out: Path = _JOB["out"]
    name, order, size = _JOB["name"], _JOB["order"], _JOB["shard_size"]
    image_field: ImageField = _JOB["image_field"]
    boxes: BboxCsv | None = _JOB["boxes"]
    counter = _JOB.get("counter")  # shared with the parent (worker processes)
    tick = _JOB.get("tick")  # the progress bar itself (writing in this process)
    entries: list[list] = []
    skipped: list[str] = []
    with atomic_writer(out / fmt.shard_file(name, k)) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for pos in range(k * size, min(len(order), (k + 1) * size)):
            i = int(order[pos])
            try:
                img = source.load(i)
            except BadImage as e:
                skipped.append(f"{source.describe(i)}: {e}")
                _count(counter, tick)
                continue
            label = source.label(i)
            ext, data = image_field.encode(img)
            members = [LABEL.encode(label), (ext, data), SIDECAR.encode(_sidecar(source, i, label, img, image_field, boxes))]
            key = f"{pos:09d}"
            for suffix, payload in sorted(members):
                if suffix == ext:
                    entries.append([key, tar.offset + fmt.TAR_HEADER, len(payload), label, ext])
                tar.addfile(fmt.tar_info(f"{key}.{suffix}", len(payload)), io.BytesIO(payload))
            _count(counter, tick)
    write_json_atomic(out / fmt.index_file(name, k), {"samples": entries, "skipped": skipped})


def _sidecar(source: ImageSource, i: int, label: int, img: torch.Tensor, image_field: ImageField, table: BboxCsv | None) -> Sidecar:
    original = source.describe(i)
    width, height = int(img.shape[2]), int(img.shape[1])
    corners = table.corners(PurePath(original).stem, source.classes[label], source.classes) if table else []
    if table and table.relative:  # fractions of the image (`cnnlab data bbox --relative`) → its pixels
        corners = [[c[0] * width, c[1] * height, c[2] * width, c[3] * height] for c in corners]
    boxes = BoxesCodec.encode(corners, image_field.scale(width, height))
    return Sidecar(label, source.classes[label], original, (width, height), boxes)


def _shard_done(out: Path, name: str, k: int) -> bool:
    """Written by an earlier run: its tar and a readable index exist (a damaged index is rewritten)."""
    if not (out / fmt.shard_file(name, k)).is_file():
        return False
    try:
        fmt.read_index(out / fmt.index_file(name, k))
    except CnnlabError:
        return False
    return True


def _count(counter, tick) -> None:
    if counter is not None:
        with counter.get_lock():
            counter.value += 1
    elif tick is not None:
        tick(1)


def _init_worker(job: dict) -> None:
    _JOB.clear()
    _JOB.update(job)


def _check_out(out: Path, settings: fmt.Settings) -> None:
    """Refuse to touch a folder that holds something else; accept our own (resume)."""
    check_out(out, settings)
    if not out.exists():
        out.mkdir(parents=True)
        return
    remove_stale_temps(out)  # a killed run's half shard, under a hidden temporary name


def check_out(out: Path, settings: fmt.Settings) -> None:
    """What :func:`write_shards` would refuse about ``out``, checked without writing (a command
    writing several splits checks them all before it writes the first)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CnnlabError(f"--out {out} is a file: give a folder (new, or one this command wrote)")
    saved = out / fmt.SETTINGS
    if saved.is_file():
        old = fmt.read_json(saved, f"delete {out} or write to another --out")
        if not isinstance(old, dict):
            raise CnnlabError(f"{saved} is corrupt: delete {out} or write to another --out")
        diff = settings.differences(old)
        if diff:
            raise CnnlabError(
                f"{out} already holds shards written from other data or settings ({'; '.join(diff)}): "
                f"use another --out, or delete {out} to rewrite it"
            )
        return
    if any(p for p in out.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))):  # temps: ours
        raise CnnlabError(f"{out} exists and holds other files: give a new or empty folder as --out (nothing there is overwritten)")


def write_shards(
    source: ImageSource,
    out: Path,
    settings: fmt.Settings,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Write (or finish writing) one split; returns the manifest."""
    if settings.shard_size < 1:
        raise CnnlabError("--shard-size must be at least 1")
    if settings.image_format not in IMAGE_FORMATS:
        raise CnnlabError(f"unknown image format {settings.image_format!r}: use one of {', '.join(IMAGE_FORMATS)}")
    if not 1 <= settings.quality <= 100:
        raise CnnlabError(f"--quality {settings.quality} is out of range: use 1..100 (90 is the default recipe)")
    out = Path(out)
    _check_out(out, settings)
    write_json_atomic(out / fmt.SETTINGS, settings.to_dict())
    name = settings.split
    n = len(source)
    order = np.random.default_rng(settings.seed).permutation(n) if n else np.zeros(0, dtype=np.int64)
    n_shards = -(-n // settings.shard_size)
    todo = [k for k in range(n_shards) if not _shard_done(out, name, k)]
    pending = set(todo)
    done_samples = sum(min(n, (k + 1) * settings.shard_size) - k * settings.shard_size for k in range(n_shards) if k not in pending)
    if done_samples:
        log(f"{out}: resuming, {n_shards - len(todo)} of {n_shards} shards already written")
    job = {
        "source": source, "out": out, "name": name, "order": order, "shard_size": settings.shard_size,
        "image_field": ImageField(settings.resize, settings.quality, settings.image_format),
        "boxes": read_bbox_csv(settings.boxes) if settings.boxes else None,
    }  # fmt: skip
    from tqdm import tqdm

    bar = tqdm(total=n, initial=done_samples, unit="img", desc=f"shards {name}", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    if workers <= 1 or len(todo) <= 1:
        _init_worker(job | {"tick": bar.update})
        for k in todo:
            _write_shard(k)
    else:
        ctx = mp.get_context("fork")  # workers inherit the opened source instead of re-opening it
        counter = ctx.Value("q", 0)
        job["counter"] = counter
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx, initializer=_init_worker, initargs=(job,)) as pool:
            pending = {pool.submit(_write_shard, k) for k in todo}
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    fut.result()  # re-raise a worker's error here
                bar.n = done_samples + counter.value
                bar.refresh()
    bar.close()
    seconds = time.perf_counter() - t0
    manifest = build_manifest(out, settings, n_shards)
    write_json_atomic(out / fmt.MANIFEST, manifest)
    written = n - done_samples
    log(
        f"{out}: {manifest['samples']} samples in {n_shards} shards, {len(manifest['skipped'])} unreadable skipped"
        + (f" ({written / max(seconds, 1e-9):.0f} images/s)" if written else "")
    )
    return manifest


def build_manifest(out: Path, settings: fmt.Settings, n_shards: int) -> dict:
    shards, skipped = [], []
    per_class: Counter[int] = Counter()
    for k in range(n_shards):
        index_path = out / fmt.index_file(settings.split, k)
        samples = fmt.read_index(index_path)
        shards.append({"file": fmt.shard_file(settings.split, k), "index": fmt.index_file(settings.split, k), "samples": len(samples)})
        per_class.update(entry[3] for entry in samples)
        skipped += fmt.read_json(index_path).get("skipped", [])
    return {
        "format": fmt.FORMAT,
        "split": settings.split,
        "classes": settings.classes,
        "samples": sum(s["samples"] for s in shards),
        "shards": shards,
        "class_counts": {c: per_class.get(i, 0) for i, c in enumerate(settings.classes)},
        "skipped": skipped,
        "settings": settings.to_dict(),
    }
