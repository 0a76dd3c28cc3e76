"""Write any source out as class folders of PNG files (``OUT/<split>/<class>/<n>.png``).

For looking at a built-in dataset, handing a few samples to ``cnnlab predict``, or training other
tools on the same split. PNG is lossless, so the exported pixels are exactly the source's.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from PIL import Image

from cnnlab.data.sources.base import BadImage, ImageSource
from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_writer


def _safe(name: str) -> str:
    """A class name usable as one folder name (no separators, not '.'/'..')."""
    cleaned = re.sub(r"[\\/\x00]", "_", name).strip()
    return cleaned if cleaned not in ("", ".", "..") else f"_{cleaned}"


def export_class_folders(source: ImageSource, out: Path, split: str, per_class: int = 0, limit: int = 0) -> int:
    """Write up to ``per_class`` images of each class (0 = all), ``limit`` in total (0 = no limit).

    Refuses an existing non-empty ``OUT/<split>`` so nothing a user has is overwritten.
    Returns the number of images written.
    """
    target = out / split
    if target.exists() and any(target.iterdir()):
        raise CnnlabError(f"{target} already exists and is not empty; choose another --export folder")
    taken: dict[int, int] = defaultdict(int)
    written = 0
    for i in range(len(source)):
        if limit and written >= limit:
            break
        label = source.label(i)
        if per_class and taken[label] >= per_class:
            continue
        try:
            image = source.load(i)
        except BadImage:
            continue
        folder = target / _safe(source.classes[label])
        folder.mkdir(parents=True, exist_ok=True)
        array = image.permute(1, 2, 0).numpy()
        with atomic_writer(folder / f"{i:06d}.png") as f:
            Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(f, format="PNG")
        taken[label] += 1
        written += 1
    return written
