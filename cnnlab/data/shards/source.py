"""Shards as an :class:`ImageSource`: random access to any sample by one ``pread``.

``--data shards:DIR`` opens ``DIR/train`` or ``DIR/val`` (each written by ``cnnlab data shards``),
or ``DIR`` itself when it is one split's folder. The per-shard indexes give each image's byte
range inside its tar, so opening reads a few small JSON files and no tar headers, and any index
can be read directly (the sampler still reads shard by shard; see :mod:`.loader`).

Boxes (shards written with ``--boxes``) live in each sample's JSON sidecar, which the index does
not locate: the first ``sidecar(i)`` of a shard reads that shard's tar headers once (no image
data) and keeps the sidecars' byte ranges. :class:`ShardBoxes` is the split as a
:class:`~cnnlab.data.sources.detection.DetectionSource` (``open_shard_boxes``).
"""

from __future__ import annotations

import os
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.boxes import clean_yolo
from cnnlab.data.shards import format as fmt
from cnnlab.data.shards.fields import IMAGE_FORMATS, SIDECAR, BoxesCodec, ImageField, Sidecar
from cnnlab.data.sources.base import BadImage, ImageSource
from cnnlab.data.sources.detection import DetectionSource, ImageBoxes, no_boxes
from cnnlab.errors import CnnlabError

_EXTS = ("jpg", "png")
MAX_OPEN = 16  # shard files kept open per process (the sampler reads a window of 4 at a time)


class ShardSource(ImageSource):
    """One split of a shard folder. Holds only arrays and paths, so DataLoader workers get it cheaply."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest_path = self.root / fmt.MANIFEST
        if not manifest_path.is_file():
            hint = " (the writer did not finish: re-run the same `cnnlab data shards` command)" if (self.root / fmt.SETTINGS).is_file() else ""
            raise CnnlabError(f"{self.root} has no {fmt.MANIFEST}: not a finished shard folder{hint}")
        self.manifest = fmt.read_json(manifest_path)
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != fmt.FORMAT:
            got = self.manifest.get("format") if isinstance(self.manifest, dict) else None
            raise CnnlabError(f"{manifest_path} is format {got!r}, this cnnlab reads {fmt.FORMAT}: rewrite the shards")
        try:
            self.classes = [str(c) for c in self.manifest["classes"]]
            self.files: list[str] = [str(s["file"]) for s in self.manifest["shards"]]
            indexes = [self.root / str(s["index"]) for s in self.manifest["shards"]]
            counts = [int(s["samples"]) for s in self.manifest["shards"]]
        except (KeyError, TypeError, ValueError) as e:
            raise CnnlabError(f"{manifest_path} is corrupt ({str(e)[:80] or type(e).__name__}): {fmt.REWRITE}") from None
        shard, offset, size, label, ext, keys = [], [], [], [], [], []
        for k, index_path in enumerate(indexes):
            entries = fmt.read_index(index_path)
            if len(entries) != counts[k]:
                raise CnnlabError(f"{index_path} lists {len(entries)} samples, {fmt.MANIFEST} says {counts[k]}: {fmt.REWRITE}")
            for key, off, n, lab, e in entries:
                if lab >= len(self.classes):
                    raise CnnlabError(f"{index_path}: label {lab} of {key} is not one of the {len(self.classes)} classes: {fmt.REWRITE}")
                shard.append(k), offset.append(off), size.append(n), label.append(lab), ext.append(_EXTS.index(e)), keys.append(key)
        self.shard = np.asarray(shard, dtype=np.int32)
        self.offset = np.asarray(offset, dtype=np.int64)
        self.size = np.asarray(size, dtype=np.int64)
        self._labels = np.asarray(label, dtype=np.int64)
        self.ext = np.asarray(ext, dtype=np.int8)
        self.keys = keys
        # Samples of shard k are the contiguous range [starts[k], starts[k + 1]).
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._fds: OrderedDict[int, int] = OrderedDict()  # shard → open file, least recently used first
        self._pid = -1
        self._sidecars: dict[int, dict[str, tuple[int, int]]] = {}  # shard → key → (offset, size) of KEY.json
        settings = self.manifest.get("settings")
        settings = settings if isinstance(settings, dict) else {}
        self.has_boxes = bool(settings.get("boxes"))  # written with --boxes
        fmt_ = settings.get("image_format")
        self.image_field = ImageField(int(settings.get("resize") or 0), int(settings.get("quality") or 0),
                                      fmt_ if fmt_ in IMAGE_FORMATS else "auto")  # fmt: skip

    def __len__(self) -> int:
        return len(self._labels)

    def label(self, index: int) -> int:
        return int(self._labels[index])

    def labels(self) -> list[int]:
        return self._labels.tolist()

    def is_jpeg(self, index: int) -> bool:
        return self.ext[index] == 0

    def encoded(self, index: int) -> bytes:
        """The stored image bytes of sample ``index`` (one pread; file descriptors kept per process)."""
        return self._pread(int(self.shard[index]), int(self.size[index]), int(self.offset[index]))

    def _pread(self, k: int, size: int, offset: int) -> bytes:
        if self._pid != os.getpid():  # a forked DataLoader worker opens its own files
            self._fds, self._pid = OrderedDict(), os.getpid()
        fd = self._fds.get(k)
        if fd is None:
            # A bounded set of open shards: an epoch visits every shard (1,282 for ImageNet), more
            # than the usual limit of 1,024 open files per process.
            if len(self._fds) >= MAX_OPEN:
                os.close(self._fds.popitem(last=False)[1])
            fd = self._fds[k] = os.open(self.root / self.files[k], os.O_RDONLY)
        else:
            self._fds.move_to_end(k)
        return os.pread(fd, size, offset)

    def load(self, index: int) -> torch.Tensor:
        return self.image_field.decode(self.encoded(index))

    def _sidecar_ranges(self, k: int) -> dict[str, tuple[int, int]]:
        """KEY → byte range of ``KEY.json`` in shard ``k``, from its tar headers (read once)."""
        found = self._sidecars.get(k)
        if found is None:
            found = {}
            try:
                with tarfile.open(self.root / self.files[k], "r:") as tar:
                    for m in tar:
                        key, _, suffix = m.name.partition(".")
                        if suffix == "json":
                            found[key] = (m.offset_data, m.size)
            except (OSError, tarfile.TarError) as e:
                raise BadImage(f"{self.root / self.files[k]}: cannot read its members ({e}): {fmt.REWRITE}") from None
            self._sidecars[k] = found
        return found

    def sidecar(self, index: int) -> Sidecar:
        """The JSON member of sample ``index``; :class:`BadImage` naming it if missing or corrupt."""
        k, key = int(self.shard[index]), self.keys[index]
        where = f"{self.root / self.files[k]}:{key}.json"
        span = self._sidecar_ranges(k).get(key)
        if span is None:
            raise BadImage(f"{where} is missing: {fmt.REWRITE}")
        try:
            return SIDECAR.decode(self._pread(k, span[1], span[0]))
        except ValueError as e:
            raise BadImage(f"{where} is corrupt ({str(e)[:80]}): {fmt.REWRITE}") from None

    def stored_size(self, index: int) -> tuple[int, int]:
        """(width, height) of the stored image of sample ``index`` (from its sidecar, nothing decoded)."""
        return self.image_field.stored_size(*self.sidecar(index).original_size)

    def stored_boxes(self, index: int) -> np.ndarray:
        """The boxes stored with sample ``index``: float32 ``(N, 5)`` ``[cls, xc, yc, w, h]`` (image
        fractions) of the sample's class (the bbox CSV's boxes are of the image's class). Not named
        ``boxes``: a split is a detection source only through :class:`ShardBoxes`."""
        side = self.sidecar(index)
        return BoxesCodec.decode(side.boxes, self.label(index), side.original_size, self.image_field.scale(*side.original_size))

    def describe(self, index: int) -> str:
        return f"{self.root / self.files[int(self.shard[index])]}:{self.keys[index]}.{_EXTS[self.ext[index]]}"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fds"], state["_pid"], state["_sidecars"] = OrderedDict(), -1, {}
        return state


class ShardBoxes(DetectionSource):
    """A shard split with its stored boxes, cleaned and tallied like any detection source."""

    rule = "the shards hold no boxes for the image (no row for it in the --boxes CSV)"

    def __init__(self, shards: ShardSource) -> None:
        if not shards.has_boxes:
            raise CnnlabError(f"the shards in {shards.root} were written without --boxes: write them again with "
                              "`cnnlab data shards ... --boxes boxes.csv` (the CSV of `cnnlab data bbox`)")  # fmt: skip
        self.shards, self.classes = shards, shards.classes
        super().__init__()

    def __len__(self) -> int:
        return len(self.shards)

    def load(self, index: int) -> torch.Tensor:
        return self.shards.load(index)

    def describe(self, index: int) -> str:
        return self.shards.describe(index)

    def read_boxes(self, index: int) -> ImageBoxes:
        rows = self.shards.stored_boxes(index)
        if not len(rows):
            return no_boxes(f"{self.describe(index)}: no boxes stored")
        cleaned = clean_yolo(rows, len(self.classes))
        return ImageBoxes(cleaned.boxes, np.zeros(len(cleaned.boxes), dtype=bool), cleaned.fixes)


def open_shard_boxes(spec: str, split: str) -> ShardBoxes:
    """:func:`open_shards`, as a detection source (the shards must have been written with ``--boxes``)."""
    return ShardBoxes(open_shards(spec, split))


def open_shards(spec: str, split: str) -> ShardSource:
    """``DIR`` → ``DIR/<split>`` (as written by ``cnnlab data shards``), or ``DIR`` if it is that split."""
    root = Path(spec).expanduser()
    if (root / split / fmt.MANIFEST).is_file() or (root / split / fmt.SETTINGS).is_file():
        return ShardSource(root / split)
    if (root / fmt.MANIFEST).is_file():
        manifest = fmt.read_json(root / fmt.MANIFEST)
        got = manifest.get("split") if isinstance(manifest, dict) else None
        if got == split:
            return ShardSource(root)
        raise CnnlabError(f"shards:{spec} holds the {got!r} split only: write {split!r} too (`cnnlab data shards SOURCE --split {split} --out {root.parent / split}`)")
    if not root.exists():
        raise CnnlabError(f"shard folder {spec} does not exist: write it with `cnnlab data shards SOURCE --out {spec}`")
    raise CnnlabError(f"no {split!r} shards in {spec}: expected {root / split / fmt.MANIFEST} (written by `cnnlab data shards`)")
