"""Rebuild ``tests/darknet/reference/`` (the darknet parity tests' data) from the darknet oracle.

Where it comes from: ``shared/darknet`` beside the repository, the public part of a reference made by
running the real darknet programs (pjreddie/darknet f6afaab, AlexeyAB/darknet 59596d7; CPU builds,
stb_image decoding) on deterministic pseudo-random weights; its README gives the provenance and the
exact commands. Only what the tests compare is kept, so a clone runs every parity test without it:

* ``cfg/``, ``data/``: the oracle's cfgs, ``.data`` and ``.names`` files, as they are.
* ``images/``: the PNG test images, and for each JPEG the pixels darknet's stb_image decoded
  (``<name>.jpg.stb.png``, lossless), since PIL's libjpeg decodes JPEGs a few levels differently.
* ``inputs.sha256``: the sha256 of every preprocessed network input darknet dumped (float32 CHW).
  The tests rebuild each input from the images with cnnlab's letterbox and check the hash, so the
  network is still fed darknet's exact input, and the PNG preprocessing test stays bit-exact.
* ``weights.sha256``: the oracle's ``SHA256SUMS``; the weights themselves are made by
  ``refweights.py`` (cnnlab's own code) and checked against it.
* ``expected.tar.xz`` (one solid xz stream): per run ``meta.txt``; the layer samples of ``layers.tsv`` (index and the
  32 ``index:value`` samples, verbatim); the network output and the full per-layer dumps as float32
  ``.npy`` rounded to 16 mantissa bits (relative error at most 2**-17, 7.6e-6; the tests tighten
  their rtol by twice that, so they accept nothing the full-precision files would reject; a
  network output equal to its last layer's dump is stored once); and, for the PNG runs the
  command tests replay, darknet's ``cli.stdout``/``cli.stderr`` and ``dets_raw``/``dets_nms.tsv``.

Usage (from the repository root)::

    python tests/darknet/make_reference.py [--shared ../shared/darknet] [--check-weights]

``--check-weights`` also runs the oracle's ``make_weights.py`` for every cfg and checks that
``refweights.py`` writes byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE / "reference"
MANTISSA_DROP = 7  # of float32's 23 mantissa bits; keeps 16 → relative error <= 2**-17


def round_mantissa(a: np.ndarray, drop: int = MANTISSA_DROP) -> np.ndarray:
    """float32 rounded to nearest with ``23 - drop`` mantissa bits (non-finite values unchanged)."""
    bits = a.astype("<f4").view("<u4").astype(np.uint64)
    half = np.uint64(1 << (drop - 1))
    rounded = (((bits + half) >> np.uint64(drop)) << np.uint64(drop)).astype(np.uint32).view("<f4")
    return np.where(np.isfinite(a) & np.isfinite(rounded), rounded, a).astype("<f4")


def _npy(a: np.ndarray) -> bytes:
    """float32 as an ``.npy`` of its 4 byte planes, uint8 (4, n): LZMA packs the planes ~15 % tighter
    than interleaved bytes (the sign/exponent plane is nearly constant). ``refdata.planes_to_f32`` undoes it."""
    planes = np.ascontiguousarray(a.astype("<f4").view(np.uint8).reshape(-1, 4).T)
    buf = io.BytesIO()
    np.save(buf, planes, allow_pickle=False)
    return buf.getvalue()


def _copy_tree(src: Path, dst: Path, pattern: str = "*") -> None:
    """Copy files without their modes (the oracle's are read-only)."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.glob(pattern)):
        shutil.copyfile(p, dst / p.name)


def _samples_only(tsv: str) -> str:
    """layers.tsv → its index and samples columns (what the tests compare), verbatim."""
    rows = [line.split("\t") for line in tsv.splitlines() if line and not line.startswith("#")]
    return "".join(f"{f[0]}\t{f[11]}\n" for f in rows)


def _put(members: dict[str, bytes], name: str, data: str | bytes) -> None:
    members[name] = data.encode() if isinstance(data, str) else data


def _write_tar_xz(path: Path, members: dict[str, bytes]) -> None:
    """One solid xz stream (preset 9e), members sorted, no times or owners: the same input gives the same bytes."""
    with tarfile.open(path, "w:xz", preset=9 | lzma.PRESET_EXTREME) as tf:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(members[name]), 0o644
            tf.addfile(info, io.BytesIO(members[name]))


def _runs(shared: Path) -> list[Path]:
    return sorted((shared / "expected").glob("*/*/*.meta.txt"))


def build(shared: Path) -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    for sub in ("cfg", "data"):
        _copy_tree(shared / sub, OUT / sub)
    _copy_tree(shared / "images", OUT / "images", "*.png")
    for raw in sorted((shared / "expected" / "decoded").glob("*.jpg.stb_rgb_hwc.u8")):
        name = raw.name.split(".stb_")[0]
        w, h = (int(v) for v in name.split("_")[1].split(".")[0].split("x"))
        pixels = np.fromfile(raw, np.uint8).reshape(h, w, 3)
        Image.fromarray(pixels).save(OUT / "images" / f"{name}.stb.png", optimize=True)
    shutil.copyfile(shared / "weights" / "SHA256SUMS", OUT / "weights.sha256")
    inputs = sorted((shared / "expected" / "inputs").glob("*.f32"))
    (OUT / "inputs.sha256").write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in inputs))

    members: dict[str, bytes] = {"format.json": json.dumps({"mantissa_bits": 23 - MANTISSA_DROP, "planes": True}).encode()}
    for meta in _runs(shared):
        _add_run(members, shared, meta)
    _write_tar_xz(OUT / "expected.tar.xz", members)


def _add_run(members: dict[str, bytes], shared: Path, meta: Path) -> None:
    prefix = str(meta)[: -len(".meta.txt")]
    rel = str(Path(prefix).relative_to(shared / "expected"))
    _put(members, f"{rel}.meta.txt", meta.read_text())
    _put(members, f"{rel}.layers.tsv", _samples_only(Path(prefix + ".layers.tsv").read_text()))
    dumps = sorted(meta.parent.glob(Path(prefix).name + ".L*.f32"))
    for dump in dumps:
        _put(members, f"{rel}.{dump.name.split('.')[-2]}.npy", _npy(round_mantissa(np.fromfile(dump, "<f4"))))
    output = np.fromfile(prefix + ".output.f32", "<f4")
    if not (dumps and np.array_equal(np.fromfile(dumps[-1], "<f4"), output)):  # else the last dump is the output
        _put(members, f"{rel}.output.npy", _npy(round_mantissa(output)))
    if rel.endswith(".png"):  # the command tests replay the PNG runs only
        for suffix in ("cli.stdout", "cli.stderr", "dets_raw.tsv", "dets_nms.tsv"):
            if Path(f"{prefix}.{suffix}").exists():
                _put(members, f"{rel}.{suffix}", Path(f"{prefix}.{suffix}").read_text())


def check_weights(shared: Path) -> None:
    sys.path.insert(0, str(HERE.parents[1]))
    from tests.darknet.refweights import write_reference_weights

    with tempfile.TemporaryDirectory() as tmp:
        for cfg in sorted((shared / "cfg").glob("*.cfg")):
            theirs, ours = Path(tmp) / "theirs.weights", Path(tmp) / "ours.weights"
            subprocess.run([sys.executable, str(shared / "make_weights.py"), str(cfg), str(theirs)], check=True, capture_output=True)
            write_reference_weights(cfg, ours)
            same = theirs.read_bytes() == ours.read_bytes()
            print(f"{cfg.name}: {'byte-identical' if same else 'DIFFERENT'} ({ours.stat().st_size} bytes)")
            if not same:
                raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=HERE.parents[2] / "shared" / "darknet", help="the oracle folder")
    ap.add_argument("--check-weights", action="store_true", help="compare refweights.py with make_weights.py for every cfg")
    a = ap.parse_args()
    if not (a.shared / "make_weights.py").is_file():
        raise SystemExit(f"no darknet oracle at {a.shared}; pass --shared PATH")
    build(a.shared)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({size / 1e6:.1f} MB)")
    if a.check_weights:
        check_weights(a.shared)


if __name__ == "__main__":
    main()
