"""The images a darknet program works through (one argument, the lines of stdin, a ``valid=`` list),
decoded and preprocessed ahead of the network (:mod:`cnnlab.engine.prefetch`), and the prepared
network they run through (:mod:`cnnlab.engine.inference`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from cnnlab.darknet.model import DarknetNet
from cnnlab.darknet.preprocess import load_image
from cnnlab.engine.inference import InferenceModel, InferenceOptions, prepare
from cnnlab.engine.prefetch import Loaded, prefetch
from cnnlab.errors import CnnlabError

Prepared = tuple[np.ndarray, np.ndarray]  # (the image as loaded, float32 CHW; the network input, CHW)


def engine_for(model: DarknetNet, options: InferenceOptions, err: TextIO, weights: str | None = None) -> InferenceModel:
    """The darknet net prepared once for the CPU (darknet's programs run on the CPU); another backend's
    export is cached beside ``weights``."""
    return prepare(model, (model.channels, model.height, model.width), torch.device("cpu"), options, cache_key=weights, log=err)


def stdin_paths() -> Iterator[str]:
    """darknet's "Enter Image Path:" answers, one per line, until end of input (blank lines are no answer)."""
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        if line.strip():
            yield line.rstrip("\n")


def images_ahead(paths: Iterable[str], prep: Callable[[np.ndarray], np.ndarray],
                 resolve: Callable[[str], str | Path] = lambda p: p) -> Iterator[Loaded[str, Prepared]]:  # fmt: skip
    """Each path with its decoded image and network input, prepared in a background thread; an
    unreadable image comes with ``error`` (a one-line CnnlabError) instead."""

    def load(path: str) -> Prepared:
        im = load_image(resolve(path))
        return im, prep(im)

    return prefetch(paths, load, depth=4, errors=(CnnlabError,))


def run_batch(engine: InferenceModel, inputs: list[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
    """The network on a list of CHW inputs as one batch."""
    return engine(torch.from_numpy(np.stack(inputs)))


class SkipLog:
    """Unreadable images of a stream: each reported on stderr as it is skipped, then counted."""

    def __init__(self, err: TextIO) -> None:
        self.err, self.skipped, self.total = err, 0, 0

    def ok(self, got: Loaded) -> bool:
        self.total += 1
        if got.error is None:
            return True
        self.skipped += 1
        print(f"{got.item}: skipped: {got.error}", file=self.err, flush=True)
        return False

    def close(self) -> int:
        """The exit status: 1 when an image was skipped (after saying how many)."""
        if self.skipped:
            print(f"skipped {self.skipped} of {self.total} image(s) that could not be read", file=self.err)
        return 1 if self.skipped else 0


def prompted(stream: Iterator[Loaded], single: bool, out: TextIO, skips: SkipLog) -> Iterator[tuple[str, object]]:
    """(path, decoded value) of each readable image, with darknet's "Enter Image Path: " prompt before
    each one read from stdin; an unreadable image is skipped and counted, except the one image given
    on the command line, whose error is the command's."""
    while True:
        if not single:
            print("Enter Image Path: ", end="", file=out, flush=True)
        got = next(stream, None)
        if got is None:
            return
        if single and got.error is not None:
            raise got.error
        if skips.ok(got):
            yield got.item, got.value
