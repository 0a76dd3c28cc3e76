"""The fast training loader: shard-aware sampling, and decode fused with random-resized-crop + flip.

Per sample: read the JPEG header (no decoding), draw the random-resized-crop box and the flip from
a generator seeded by ``(seed, epoch, index)``, then decode only the crop's region at the smallest
DCT scale that keeps at least the output resolution (:mod:`.jpeg`), resize and flip. PNGs, CMYK
JPEGs and camera photos with Exif orientation take the general decoder, then the same crop.
Batches are uint8 ``(B, C, H, W)``; the engine's ``DeviceNormalize`` normalises on the device.

Sampling (:class:`ShardSampler`) keeps the engine's contract — ``(epoch, index)`` keys and
``set_epoch(epoch, start)`` — so determinism and mid-epoch resume work exactly as for the other
sources. Each epoch the shards are permuted; rank r takes shards r, r + W, r + 2W … of that order
(no shard is read by two ranks); within a rank, samples are shuffled inside windows of a few
shards, so reads stay within a few open files. DataLoader workers take whole batches in turn, so no
sample goes to two workers either. The crop is a function of (seed, epoch, index), not of the
worker, so the batches do not depend on the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnlab.data.batch_slots import BatchBuffer
from cnnlab.data.loader import Batch, batch_loader, sample_seed
from cnnlab.data.shards import crop_draw, jpeg_kernels
from cnnlab.data.shards.crop_draw import draw_crop
from cnnlab.data.shards.jpeg import AREA_ABOVE, decode_crop, parse_layout, resize_into, warp_into
from cnnlab.data.sources.base import BadImage
from cnnlab.errors import CnnlabError

WINDOW = 4  # shards shuffled together within a rank


def crop_array(img: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int], flip: bool,
               out: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The same crop on an already decoded ``(H, W, C)`` array (PNG samples, or JPEGs we cannot parse)."""
    x, y, w, h = box
    if min(w / size[1], h / size[0]) <= AREA_ABOVE:
        return warp_into(img, box, 1.0, size, flip, out)
    return resize_into(np.ascontiguousarray(img[y : y + h, x : x + w]), size, flip, out)


class FastCropDataset(Dataset):
    """``(epoch, index)`` → ``(uint8 (C, H, W), label, index)``, or ``(None, reason, index)`` for a bad sample.

    ``source`` needs ``encoded(index) -> bytes``, ``label``, ``describe`` and ``is_jpeg`` (shards,
    or :class:`EncodedFiles` for image files).
    """

    def __init__(self, source, size: tuple[int, int], channels: int, seed: int, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), hflip: float = 0.5, partial: bool = True) -> None:  # fmt: skip
        if channels not in (1, 3):
            raise CnnlabError(f"the fast loader makes 1- or 3-channel images, not {channels}")
        self.source, self.size, self.channels, self.seed = source, tuple(size), channels, seed
        # Floats, so the compiled draw sees one argument type whatever the recipe wrote.
        self.scale, self.ratio, self.hflip = (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1])), float(hflip)
        self.partial = partial
        # Compiled here, before DataLoader workers fork: each would otherwise compile or load them.
        jpeg_kernels.compile_now()
        crop_draw.compile_now()

    def __len__(self) -> int:
        return len(self.source)

    def _decoded(self, data: bytes, seed: int, out: np.ndarray | None) -> np.ndarray:
        from cnnlab.data.images import decode_image
        from cnnlab.data.transforms import MatchChannels

        img = MatchChannels(self.channels)(decode_image(data)).permute(1, 2, 0).numpy()
        box, flip = draw_crop(seed, img.shape[1], img.shape[0], self.scale, self.ratio, self.hflip)
        return crop_array(img, box, self.size, flip, out)

    def crop(self, epoch: int, index: int, out: np.ndarray | None = None) -> np.ndarray | str:
        """Sample ``index``'s crop for ``epoch`` as uint8 ``(H, W, C)`` (into ``out`` when given), or
        why it could not be read."""
        seed = sample_seed(self.seed, epoch, index)
        try:
            data = self.source.encoded(index)
            layout = None
            if self.source.is_jpeg(index):
                try:
                    layout = parse_layout(data)
                except ValueError:  # not a JPEG after all (a PNG named .jpg): the general decoder knows
                    pass
            if layout is None or not layout.plain:
                return self._decoded(data, seed, out)
            box, flip = draw_crop(seed, layout.width, layout.height, self.scale, self.ratio, self.hflip)
            return decode_crop(data, box, self.size, flip, self.channels == 1, self.partial, layout, out)
        except (BadImage, ValueError, OSError, cv2.error) as e:
            return f"{self.source.describe(index)}: {str(e)[:100] or type(e).__name__}"

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        arr = self.crop(epoch, index)
        if isinstance(arr, str):
            return None, arr, index
        return torch.from_numpy(arr).permute(2, 0, 1), self.source.label(index), index  # (C, H, W)

    def __getitems__(self, keys: list[tuple[int, int]]) -> Batch:
        """A whole batch (the DataLoader's fetch when the dataset has this method): each crop is
        resized straight into its slot of one uint8 ``(B, H, W, C)`` buffer — in a worker, shared
        memory that the worker reuses (:mod:`cnnlab.data.batch_slots`) —, so there is no per-sample
        tensor, stack or pickling. Images come out as a ``(B, C, H, W)`` view in channels_last
        layout; ``DeviceNormalize`` makes the layout the model's."""
        h, w = self.size
        buffer = BatchBuffer((len(keys), h, w, self.channels))
        labels, indices, bad = [], [], []
        for epoch, index in keys:
            got = self.crop(epoch, index, buffer.array[len(labels)])
            if isinstance(got, str):
                bad.append(got)
            else:
                labels.append(self.source.label(index))
                indices.append(index)
        n = len(labels)
        return Batch(buffer.images(n), torch.tensor(labels, dtype=torch.int64),
                     torch.tensor(indices, dtype=torch.int64), bad, len(keys))  # fmt: skip


class EncodedFiles:
    """Image files of a folder source as encoded bytes, for :class:`FastCropDataset` on original files."""

    def __init__(self, folder) -> None:  # a FolderSource
        import os

        self.paths = [os.path.join(folder.root, p) for p in folder.paths]
        self.folder = folder

    def __len__(self) -> int:
        return len(self.paths)

    def encoded(self, index: int) -> bytes:
        with open(self.paths[index], "rb") as f:
            return f.read()

    def is_jpeg(self, index: int) -> bool:
        return True  # decided from the bytes: non-JPEGs fall back to the general decoder

    def label(self, index: int) -> int:
        return self.folder.label(index)

    def describe(self, index: int) -> str:
        return self.paths[index]


class ShardSampler(Sampler[tuple[int, int]]):
    """``(epoch, index)`` keys, shard-aware; the interface of :class:`cnnlab.data.loader.ResumableSampler`.

    ``starts[k]:starts[k + 1]`` are shard k's sample indices. With ``drop_last`` every rank gets the
    same number of samples (the smallest rank's share; DDP needs equal step counts).
    """

    def __init__(self, starts: Sequence[int], seed: int, shuffle: bool, rank: int = 0, world: int = 1,
                 drop_last: bool = False, window: int = WINDOW) -> None:  # fmt: skip
        self.starts = [int(s) for s in starts]
        n_shards = len(self.starts) - 1
        if not 0 <= rank < world:
            raise CnnlabError(f"rank {rank} is outside world size {world}")
        if n_shards < world:
            raise CnnlabError(f"{n_shards} shard(s) cannot be shared by {world} ranks without overlap: rewrite them with a smaller --shard-size")
        self.seed, self.shuffle, self.rank, self.world, self.drop_last, self.window = seed, shuffle, rank, world, drop_last, window
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _shard_order(self) -> list[int]:
        n_shards = len(self.starts) - 1
        if not self.shuffle:
            return list(range(n_shards))
        g = torch.Generator().manual_seed(self.seed + 10_007 * self.epoch)
        return torch.randperm(n_shards, generator=g).tolist()

    def indices(self) -> list[int]:
        """This rank's whole order for the current epoch (``start`` not applied)."""
        order = self._shard_order()
        mine = order[self.rank :: self.world]
        out: list[int] = []
        g = torch.Generator().manual_seed(self.seed * 31 + 10_007 * self.epoch + 7 * self.rank + 1)
        for w in range(0, len(mine), self.window):
            block = np.concatenate([np.arange(self.starts[k], self.starts[k + 1]) for k in mine[w : w + self.window]])
            if self.shuffle:
                block = block[torch.randperm(len(block), generator=g).numpy()]
            out += block.tolist()
        if self.drop_last and self.world > 1:
            sizes = [sum(self.starts[k + 1] - self.starts[k] for k in order[r :: self.world]) for r in range(self.world)]
            out = out[: min(sizes)]
        return out

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices()[self.start :]:
            yield (self.epoch, i)

    def __len__(self) -> int:
        return max(0, len(self.indices()) - self.start)


def make_shard_loader(
    source,
    size: tuple[int, int],
    channels: int,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    workers: int = 0,
    drop_last: bool = True,
    rank: int = 0,
    world: int = 1,
    rrc_scale: Sequence[float] = (0.08, 1.0),
    rrc_ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    pin_memory: bool = False,
) -> DataLoader:
    """Training batches from a :class:`~cnnlab.data.shards.source.ShardSource`: this rank's share of ``world``."""
    sampler = ShardSampler(source.starts, seed, shuffle, rank, world, drop_last=drop_last)
    dataset = FastCropDataset(source, size, channels, seed, rrc_scale, rrc_ratio, hflip)
    return batch_loader(dataset, sampler, batch_size, workers, drop_last, pin_memory, seed)
