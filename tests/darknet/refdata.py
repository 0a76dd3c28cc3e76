"""The darknet oracle's expected outputs, as stored in ``reference/`` (see ``make_reference.py``).

Everything the parity tests compare lives in the repository, so a clone without ``../shared`` runs
them all: cfgs, ``.data``/``.names``, images, and ``expected.tar.xz`` with each run's meta, layer
samples, output and per-layer dumps, and (PNG runs) darknet's printed output and detections.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from cnnlab.darknet.preprocess import letterbox, load_image, resize, resize_min_crop

REF = Path(__file__).resolve().parent / "reference"


@lru_cache(maxsize=1)
def _members() -> dict[str, bytes]:
    with tarfile.open(REF / "expected.tar.xz", "r:xz") as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _format() -> dict:
    return json.loads(_members()["format.json"])


# The stored float32 values keep 16 of 23 mantissa bits (round to nearest): relative error <= 2**-17.
# Comparing with rtol - 2·STORE_EPS accepts nothing that rtol would reject against the full values.
STORE_EPS = 2.0 ** -(_format()["mantissa_bits"] + 1)


def planes_to_f32(planes: np.ndarray) -> np.ndarray:
    """uint8 (4, n) byte planes (how make_reference stores float32, for compression) → float32 (n,)."""
    return np.ascontiguousarray(planes.T).view("<f4").reshape(-1)


def _array(name: str) -> np.ndarray:
    return planes_to_f32(np.load(io.BytesIO(_members()[name]), allow_pickle=False))


def expected_text(run_id: str, suffix: str) -> str:
    """A stored text file of a run, e.g. ``expected_text("pjreddie/tiny/img2_224x224.png", "cli.stdout")``."""
    return _members()[f"{run_id}.{suffix}"].decode()


@cache
def input_hashes() -> dict[str, str]:
    """sha256 of every preprocessed input darknet dumped (``expected/inputs/<name>.f32``)."""
    lines = (REF / "inputs.sha256").read_text().splitlines()
    return {name: digest for digest, name in (line.split() for line in lines)}


def source_image(image: str) -> np.ndarray:
    """The pixels darknet decoded: the PNG itself, or for a JPEG the stored stb_image decoding."""
    return load_image(REF / "images" / (image if image.endswith(".png") else f"{image}.stb.png"))


def preprocess_input(name: str) -> np.ndarray:
    """Rebuild ``inputs/<name>`` (``<image>__<mode>_<W>x<H>.f32``) with cnnlab's preprocessing."""
    image, rest = name[: -len(".f32")].split("__")
    mode, wh = rest.rsplit("_", 1)
    w, h = (int(v) for v in wh.split("x"))
    fn = {"letterbox": letterbox, "resize": resize, "resizemin_crop": resize_min_crop}[mode]
    return fn(source_image(image), w, h)


def sha256_of(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


@dataclass
class Run:
    """One expected/<flavor>/<net>/<image> run."""

    flavor: str
    net: str  # folder name, e.g. "yolov4-tiny-letterbox"
    image: str
    meta: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.flavor}/{self.net}/{self.image}"

    @property
    def cfg_name(self) -> str:
        return Path(self.meta["cfg"]).stem

    @property
    def is_detector(self) -> bool:
        return "det_layer" in self.meta

    def text(self, suffix: str) -> str:
        return expected_text(self.id, suffix)

    def dumps(self) -> dict[int, np.ndarray]:
        """Full outputs of the dumped layers (every [yolo]/[region], every layer of oracle-mini-pj)."""
        head = f"{self.id}.L"
        return {int(n[len(head) : -len(".npy")]): _array(n) for n in sorted(_members()) if n.startswith(head)}

    def output(self) -> np.ndarray:
        """``network_predict``'s vector: stored once, as the last layer's dump when there is one."""
        name = f"{self.id}.output.npy"
        if name in _members():
            return _array(name)
        dumps = self.dumps()
        return dumps[max(dumps)]

    def input(self) -> np.ndarray:
        """darknet's network input (1, C, H, W), rebuilt from the image and checked bit for bit."""
        name = Path(self.meta["input_file"]).name
        x = preprocess_input(name)
        assert sha256_of(x) == input_hashes()[name], f"{self.id}: cnnlab's preprocessing no longer gives darknet's input {name}"
        return x[None]


def read_meta(text: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def all_runs() -> list[Run]:
    runs = []
    for name in sorted(n for n in _members() if n.endswith(".meta.txt")):
        flavor, net, file = name.split("/")
        runs.append(Run(flavor, net, file[: -len(".meta.txt")], read_meta(_members()[name].decode())))
    return runs


def layer_samples(tsv: str) -> dict[int, list[tuple[int, float]]]:
    """layers.tsv (index and samples columns): layer index → its 32 (flat CHW index, value) samples."""
    out = {}
    for line in tsv.splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        out[int(f[0])] = [(int(s.split(":")[0]), float(s.split(":")[1])) for s in f[-1].split()]
    return out


def read_dets(tsv: str) -> list[tuple[np.ndarray, dict[int, float]]]:
    rows = []
    for line in tsv.splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        probs = {int(s.split(":")[0]): float(s.split(":")[1]) for s in f[6].split()} if len(f) > 6 else {}
        rows.append((np.array([float(v) for v in f[1:6]], np.float32), probs))
    return rows
