"""Darknet ``.weights`` files: header variants, size checks, reading into and writing from layers.

Format (pjreddie parser.c, AlexeyAB parser.c): int32 major, minor, revision; then ``seen`` as uint64
when ``major*10+minor >= 2`` (pjreddie also requires major, minor < 1000) else uint32; then every
layer's blocks in cfg order as float32 little-endian. ``major > 1000 or minor > 1000`` marks
[connected] weights stored transposed. Each layer lists its blocks (see ``DarknetLayer.blocks``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.fileio import write_file_atomic

if TYPE_CHECKING:
    from cnnlab.darknet.model import DarknetNet


@dataclass
class WeightsHeader:
    major: int = 0
    minor: int = 2
    revision: int = 0
    seen: int = 0
    seen_bytes: int = 8  # 8 (size_t / uint64) or 4 (int32)

    @property
    def transpose(self) -> bool:
        """[connected] weights stored as [in][out] (parser.c: major > 1000 || minor > 1000)."""
        return self.major > 1000 or self.minor > 1000

    @property
    def nbytes(self) -> int:
        return 12 + self.seen_bytes

    def pack(self) -> bytes:
        seen = struct.pack("<Q" if self.seen_bytes == 8 else "<I", self.seen & (2 ** (8 * self.seen_bytes) - 1))
        return struct.pack("<iii", self.major, self.minor, self.revision) + seen

    @classmethod
    def parse(cls, data: bytes, flavor: str, source: str) -> "WeightsHeader":
        if len(data) < 12:
            raise CnnlabError(f"{source}: only {len(data)} bytes; a darknet .weights file starts with a 12-byte version header")
        major, minor, revision = struct.unpack_from("<iii", data, 0)
        wide = major * 10 + minor >= 2
        if flavor == "pjreddie":
            wide = wide and major < 1000 and minor < 1000
        seen_bytes = 8 if wide else 4
        if len(data) < 12 + seen_bytes:
            raise CnnlabError(f"{source}: truncated header ({len(data)} bytes); not a darknet .weights file")
        (seen,) = struct.unpack_from("<Q" if wide else "<I", data, 12)
        return cls(major, minor, revision, seen, seen_bytes)

    def to_dict(self) -> dict:
        return dict(major=self.major, minor=self.minor, revision=self.revision, seen=self.seen, seen_bytes=self.seen_bytes)


def _layer_floats(model: "DarknetNet", transpose: bool) -> list[int]:
    return [sum(t.numel() for t in layer.blocks(transpose)) for layer in model.layers]


def load_weights(model: "DarknetNet", path: str | Path, allow_partial: bool = False, upto: int | None = None) -> WeightsHeader:
    """Read ``path`` into ``model``'s layers; a size mismatch is an error naming the first layer that does not fit.

    With ``allow_partial`` the layers that fit completely are loaded (a prefix, as darknet's
    ``partial`` writes) and the rest keep their initial values. ``upto`` reads layers ``[0, upto)``
    only and ignores what the file holds after them (fine-tuning: a new classifier layer).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CnnlabError(f"cannot read weights {str(p)!r}: {e.strerror}") from None
    header = WeightsHeader.parse(data, model.flavor, str(p))
    body = len(data) - header.nbytes
    if body % 4:
        raise CnnlabError(f"{p}: {body} bytes after the header is not a whole number of float32 values; the file is corrupt")
    floats = np.frombuffer(data, dtype="<f4", offset=header.nbytes)
    all_sizes = _layer_floats(model, header.transpose)
    if upto is not None:
        _check_backbone(model, p, floats.size, upto, all_sizes)
    sizes = all_sizes[:upto]
    need = sum(sizes)
    have = floats.size
    n_load = len(sizes)
    if have < need:
        end = 0
        first_bad = 0
        for i, n in enumerate(sizes):
            if end + n > have:
                first_bad = i
                break
            end += n
        msg = (
            f"{p} is too short for {model.source}: it ends inside layer {first_bad} [{model.sections[first_bad + 1].type}] "
            f"(cfg line {model.sections[first_bad + 1].line}); the cfg needs {need} floats ({need * 4 + header.nbytes} bytes), "
            f"the file has {have} ({len(data)} bytes)"
        )
        if not allow_partial:
            raise CnnlabError(msg + "; use the matching cfg (`cnnlab darknet ... --allow-partial` loads only the layers that fit)")
        n_load = first_bad
    elif have > need and not allow_partial and upto is None:
        raise CnnlabError(
            f"{p} is too long for {model.source}: the cfg needs {need} floats ({need * 4 + header.nbytes} bytes) but the "
            f"file has {have} ({len(data)} bytes); is this the cfg the weights were trained with? "
            "(`cnnlab darknet ... --allow-partial` ignores the extra values)"
        )
    off = 0
    with torch.no_grad():
        for layer in list(model.layers)[:n_load]:
            for t in layer.blocks(header.transpose):
                n = t.numel()
                src = torch.from_numpy(floats[off : off + n].copy()).view(t.shape)
                t.copy_(src)
                off += n
    model.header = header
    model.loaded_layers = n_load
    return header


def _check_backbone(model: "DarknetNet", p: Path, have: int, k: int, sizes: list[int]) -> None:
    """Fine-tuning reads layers [0, k) and puts a new classifier at layer k, so the file must be a
    backbone of this cfg: a prefix that ends where a layer ends (darknet's ``partial``), or layers
    [0, k) followed by a classifier like layer k for some other class count. darknet itself reads
    whatever floats are there; a file of another cfg would load as noise without this. ``sizes``:
    the floats of each layer of ``model``."""
    need = sum(sizes[:k])
    if have < need:
        ends = np.cumsum([0, *sizes[:k]])
        if have in ends[1:]:
            return
        i = int(np.searchsorted(ends, have, side="right")) - 1
        sec = model.sections[i + 1]
        raise CnnlabError(
            f"{p} ends inside layer {i} [{sec.type}] (cfg line {sec.line}) of {model.source}: it is truncated, or the "
            f"weights of another cfg (a darknet `partial` backbone ends where a layer ends); use the cfg it was trained with"
        )
    rest = have - need - sum(sizes[k + 1 :])
    per_class = sizes[k] // max(1, model.layers[k].out_shape[0])
    if rest != 0 and (rest < 0 or per_class == 0 or rest % per_class):
        raise CnnlabError(
            f"{p} does not fit {model.source} as a backbone: layers 0-{k - 1} take {need} floats, and the "
            f"{have - need} after them are not a classifier like layer {k} ({per_class} floats per class); "
            "is this the cfg the weights were trained with?"
        )


def weights_bytes(model: "DarknetNet", upto: int | None = None, header: WeightsHeader | None = None) -> bytes:
    """The ``.weights`` bytes of ``model`` (layers ``[0, upto)``), in ``header``'s variant."""
    h = header or model.header
    parts = [h.pack()]
    layers = list(model.layers) if upto is None else list(model.layers)[:upto]
    for layer in layers:
        for t in layer.blocks(h.transpose):
            parts.append(t.detach().to("cpu", torch.float32).reshape(-1).numpy().astype("<f4").tobytes())
    return b"".join(parts)


def save_weights(model: "DarknetNet", path: str | Path, upto: int | None = None, header: WeightsHeader | None = None) -> None:
    """Write darknet ``.weights`` atomically (temp file + rename, so a kill never leaves half a file), with
    the permissions the umask gives, as a checkpoint gets (``partial``, training backups, ``save_weights``)."""
    write_file_atomic(Path(path), weights_bytes(model, upto, header))
