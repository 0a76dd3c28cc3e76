"""Reading the oracle's expected files (meta.txt, *.f32, layers.tsv, dets_*.tsv)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REF = (Path(__file__).resolve().parents[2] / ".." / "shared" / "darknet").resolve()
SKIP_REASON = f"darknet reference oracle not found at {REF} (it lives in shared/darknet beside the repository)"


def have_ref() -> bool:
    return (REF / "make_weights.py").is_file()



needs_ref = pytest.mark.skipif(not have_ref(), reason=SKIP_REASON)


@dataclass
class Run:
    """One expected/<flavor>/<net>/<image> run."""

    flavor: str
    net: str  # folder name, e.g. "yolov4-tiny-letterbox"
    image: str
    meta: dict[str, str]

    @property
    def prefix(self) -> Path:
        return REF / "expected" / self.flavor / self.net / self.image

    @property
    def cfg_name(self) -> str:
        return Path(self.meta["cfg"]).stem

    @property
    def is_detector(self) -> bool:
        return "det_layer" in self.meta

    def file(self, suffix: str) -> Path:
        return Path(f"{self.prefix}.{suffix}")

    def input(self) -> np.ndarray:
        w, h, c = (int(v) for v in self.meta["net_whc"].split())
        return np.fromfile(REF / "expected" / self.meta["input_file"], "<f4").reshape(1, c, h, w)

    @property
    def id(self) -> str:
        return f"{self.flavor}/{self.net}/{self.image}"


def read_meta(path: Path) -> dict[str, str]:
    return dict(line.rstrip("\n").split("\t", 1) for line in path.read_text().splitlines() if "\t" in line)


def all_runs() -> list[Run]:
    if not have_ref():
        return []
    runs = []
    for meta in sorted((REF / "expected").glob("*/*/*.meta.txt")):
        flavor, net = meta.parent.parent.name, meta.parent.name
        runs.append(Run(flavor, net, meta.name[: -len(".meta.txt")], read_meta(meta)))
    return runs


def layer_samples(tsv: Path) -> dict[int, list[tuple[int, float]]]:
    """layers.tsv: layer index → its 32 (flat CHW index, value) samples."""
    out = {}
    for line in tsv.read_text().splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        out[int(f[0])] = [(int(s.split(":")[0]), float(s.split(":")[1])) for s in f[11].split()]
    return out


def read_dets(path: Path) -> list[tuple[np.ndarray, dict[int, float]]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        probs = {int(s.split(":")[0]): float(s.split(":")[1]) for s in f[6].split()} if len(f) > 6 else {}
        rows.append((np.array([float(v) for v in f[1:6]], np.float32), probs))
    return rows
