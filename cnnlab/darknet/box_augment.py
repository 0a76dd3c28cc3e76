"""darknet's detector training augmentation (data.c ``load_data_detection``), one sample at a time,
seeded by the caller's generator, plus the validation input and ``random=1`` multi-scale.

Per image, as the cfg and the flavor say (geometry in :mod:`cnnlab.darknet.box_geometry`):

* AlexeyAB: a window whose sides move by up to ``jitter`` of the image (``[yolo] resize=`` adds a
  zoom), widened to the network's aspect with ``letter_box=1``, stretched to the network size;
  a horizontal flip when ``flip=1`` (the default); HSV distortion; optionally ``mosaic=1``
  (:meth:`BoxAugment.mosaic`, :mod:`cnnlab.darknet.box_mosaic`).
* pjreddie: the aspect ratio jittered by ``jitter``, the image fitted into the network and placed
  at random on grey; HSV distortion; a flip half of the time (always on).

HSV is darknet's float ``distort_image`` (:func:`cnnlab.darknet.hsv.distort_fast`, the numbers of
the classifier's :func:`cnnlab.darknet.augment.distort`, faster): hue shifted by up to ±``hue``,
saturation and value scaled by ``rand_scale``. AlexeyAB's OpenCV build does the
same on 8-bit HSV, so its colours differ by rounding. Boxes follow the pixels (``correct_boxes``),
are clamped to the image and dropped when under one network pixel (AlexeyAB) or 0.001 of the
image (pjreddie) wide or high, and capped at the head's ``max=``.

Reproducible: every draw comes from the ``rng`` argument in a fixed order — geometry first, then
HSV — so a generator seeded by the sample (:func:`sample_rng`) gives the same sample after a
resume, and changing only hue/saturation/exposure leaves the boxes as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnnlab.darknet.augment import rand_scale, uniform
from cnnlab.darknet.box_geometry import (
    Crop,
    alexeyab_truth,
    crop_resize,
    crop_resize_plain,
    draw_crop,
    draw_place,
    flipped,
    pjreddie_truth,
    place_image,
    round_half_away,
    to_rgb,
)
from cnnlab.darknet.box_mosaic import draw_cut, paste, tile, tile_boxes, to_corner
from cnnlab.darknet.cfg import Section
from cnnlab.darknet.hsv import distort_fast
from cnnlab.darknet.preprocess import letterbox, resize
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.darknet.model import DarknetNet

FLAVORS = ("pjreddie", "alexeyab")
HEADS = ("yolo", "region", "Gaussian_yolo")  # the sections whose jitter/random darknet's trainer reads
# AlexeyAB [net] augmentation/training-data keys cnnlab does not implement, reported when set (non-zero)
UNSUPPORTED = ("mixup", "cutmix", "blur", "gaussian_noise", "track", "contrastive", "adversarial_lr")
PJREDDIE_MAX_BOXES = {"yolo": 90, "region": 30}  # pjreddie's [head] max= defaults (AlexeyAB: 200)


def sample_rng(seed: int, sample: int) -> np.random.Generator:
    """The generator of sample ``sample`` of a run (its position in the run's order), as the
    classifier's augmentation seeds it: the same sample gets the same draws after a resume."""
    return np.random.default_rng([seed, sample])


@dataclass(frozen=True)
class BoxAugment:
    """darknet's detector augmentation settings; build with :meth:`from_net`."""

    flavor: str = "alexeyab"
    jitter: float = 0.2  # [yolo]/[region] jitter=: each side moves by up to this share of the image
    resize: float = 1.0  # AlexeyAB [yolo] resize=: extra zoom in [1/resize, resize]
    hue: float = 0.0  # [net] hue=: hue shift in ±hue (of a full turn)
    saturation: float = 1.0  # [net] saturation=: S × rand_scale(saturation)
    exposure: float = 1.0  # [net] exposure=: V × rand_scale(exposure)
    flip: bool = True  # AlexeyAB [net] flip= (pjreddie always flips)
    letter_box: bool = False  # AlexeyAB [net] letter_box= (pjreddie always letterboxes)
    use_mosaic: bool = False  # AlexeyAB [net] mosaic=
    random: float = 0.0  # [yolo]/[region] random=: multi-scale every 10 iterations when non-zero
    resize_step: int = 32  # AlexeyAB [net] resize_step=: the multi-scale sizes are multiples of it
    max_boxes: int = 200  # [yolo]/[region] max=: boxes kept per image
    unsupported: tuple[str, ...] = ()  # keys set in the cfg that cnnlab ignores (the caller warns)
    opencv: bool = True  # AlexeyAB: the OpenCV build's crop fill and resize (False: the build without OpenCV)

    @classmethod
    def from_net(cls, net: DarknetNet | Sequence[Section], flavor: str | None = None, opencv: bool = True) -> BoxAugment:
        """From a :class:`~cnnlab.darknet.model.DarknetNet` (its flavor unless ``flavor`` is given)
        or its cfg sections. Like darknet's trainer, reads jitter/resize/random/max from the last
        [yolo]/[region] section. ``opencv``: mimic AlexeyAB built with OpenCV (mean-colour padding,
        ``cv::resize``) or without (edge pixels, darknet's ``resize_image``; that build refuses
        ``mosaic=1``, cnnlab does not)."""
        sections = list(getattr(net, "sections", net))
        flavor = flavor or getattr(net, "flavor", None)
        if flavor not in FLAVORS:
            raise CnnlabError(f"unknown darknet flavor {flavor!r}; use one of {', '.join(FLAVORS)}")
        opts = sections[0]
        heads = [s for s in sections[1:] if s.type in HEADS]
        if not heads:
            raise CnnlabError(f"{opts.source}: no [yolo] or [region] section; box augmentation needs a detector cfg")
        head = heads[-1]
        common = {"flavor": flavor, "jitter": head.float("jitter", 0.2), "hue": opts.float("hue", 0.0)}
        common |= {"saturation": opts.float("saturation", 1.0), "exposure": opts.float("exposure", 1.0)}
        if flavor == "pjreddie":  # reads no flip=/letter_box=/mosaic=/resize=; random= is an int
            max_boxes = head.int("max", PJREDDIE_MAX_BOXES.get(head.type, 90))
            return cls(**common, flip=True, letter_box=True, random=float(head.int("random", 0)), max_boxes=max_boxes)
        mosaic, letter_box = bool(opts.int("mosaic", 0)), bool(opts.int("letter_box", 0))
        if mosaic and letter_box:
            raise CnnlabError(f"{opts.where('mosaic')}: letter_box=1 and mosaic=1 cannot be combined (darknet refuses them too); remove one")
        return cls(
            **common,
            resize=head.float("resize", 1.0),
            flip=bool(opts.int("flip", 1)),
            letter_box=letter_box,
            use_mosaic=mosaic,
            random=head.float("random", 0.0),
            resize_step=max(1, int(opts.float("resize_step", 32))),
            max_boxes=head.int("max", 200),
            unsupported=tuple(k for k in UNSUPPORTED if opts.has(k) and opts.float(k, 0.0) != 0),
            opencv=opencv,
        )

    # -- one image ---------------------------------------------------------------------------------

    def __call__(self, image: torch.Tensor, boxes: np.ndarray, rng: np.random.Generator, out_w: int, out_h: int) -> tuple[torch.Tensor, np.ndarray]:
        """One training sample: ``image`` uint8 (C, H, W), ``boxes`` (N, 5) ``[cls, xc, yc, w, h]``
        relative → float32 (3, out_h, out_w) in [0, 1] and the boxes that survive, (N', 5)."""
        im, boxes = to_rgb(image), _as_boxes(boxes)
        if self.flavor == "pjreddie":
            return self._pjreddie(im, boxes, rng, out_w, out_h)
        out, kept, _, hsv = self._alexeyab(im, boxes, rng, out_w, out_h, corner=None)
        return self._distort(out, hsv), kept

    def _alexeyab(self, im: torch.Tensor, boxes: np.ndarray, rng: np.random.Generator, w: int, h: int, corner: int | None) -> tuple[torch.Tensor, np.ndarray, Crop, tuple[float, float, float]]:
        """AlexeyAB's window and flip; ``corner`` (mosaic quadrant) enables the corner move. Returns
        the image, the boxes, the window as seen in the output (mirrored if flipped) and the HSV
        draws, applied by the caller (a mosaic distorts only the part it shows)."""
        _, oh, ow = im.shape
        crop = draw_crop(rng, ow, oh, w, h, self.jitter, self.resize, self.letter_box)
        flip = self.flip and bool(rng.integers(2))
        hsv = self._draw_hsv(rng)
        if corner is not None and rng.integers(2) == 0:
            crop = to_corner(crop, corner, flip)
        crop = crop.checked()
        out = (crop_resize if self.opencv else crop_resize_plain)(im, crop, w, h)
        if flip:
            out = out.flip(-1)
        kept = alexeyab_truth(boxes, crop, flip, w, h, self.max_boxes, rng)
        return out, kept, flipped(crop) if flip else crop, hsv

    def _pjreddie(self, im: torch.Tensor, boxes: np.ndarray, rng: np.random.Generator, w: int, h: int) -> tuple[torch.Tensor, np.ndarray]:
        """pjreddie's placement on grey, HSV, then the flip (draw order as darknet)."""
        _, oh, ow = im.shape
        place = draw_place(rng, ow, oh, w, h, self.jitter)
        hsv = self._draw_hsv(rng)
        flip = bool(rng.integers(2))
        out = self._distort(place_image(im, place, w, h), hsv)
        if flip:
            out = out.flip(-1)
        kept = pjreddie_truth(boxes, place, flip, w, h, self.max_boxes, rng)
        return out.contiguous(), kept

    def _draw_hsv(self, rng: np.random.Generator) -> tuple[float, float, float]:
        """(dhue, dsat, dexp), always drawn so the stream after them does not depend on the settings."""
        return uniform(rng, -self.hue, self.hue), rand_scale(rng, self.saturation), rand_scale(rng, self.exposure)

    @staticmethod
    def _distort(out: torch.Tensor, hsv: tuple[float, float, float]) -> torch.Tensor:
        dhue, dsat, dexp = hsv
        if dhue == 0 and dsat == 1 and dexp == 1:
            return out
        return torch.from_numpy(distort_fast(out.numpy(), dhue, dsat, dexp))

    # -- mosaic ------------------------------------------------------------------------------------

    def draw_mosaic(self, rng: np.random.Generator) -> bool:
        """Whether this sample is a mosaic: darknet tiles a whole batch half of the time; cnnlab
        decides per sample, with the same probability. Draws nothing when mosaic is off."""
        return self.use_mosaic and bool(rng.random() < 0.5)

    def mosaic(self, samples: Sequence[tuple[torch.Tensor, np.ndarray]], rng: np.random.Generator, out_w: int, out_h: int) -> tuple[torch.Tensor, np.ndarray]:
        """Four ``(image, boxes)`` samples tiled as AlexeyAB's ``mosaic=1`` → one sample
        (see :mod:`cnnlab.darknet.box_mosaic`). Works for either flavor's settings, but only
        AlexeyAB reads ``mosaic=``."""
        if len(samples) != 4:
            raise ValueError(f"mosaic takes 4 samples, got {len(samples)}")
        cut_x, cut_y = draw_cut(rng, out_w, out_h)
        canvas = torch.zeros(3, out_h, out_w)
        parts = []
        for k, (image, boxes) in enumerate(samples):
            out, kept, crop, hsv = self._alexeyab(to_rgb(image), _as_boxes(boxes), rng, out_w, out_h, corner=k)
            t = tile(k, cut_x, cut_y, out_w, out_h, crop)
            paste(canvas, out, t)
            block = canvas[:, t.dy : t.dy + t.qh, t.dx : t.dx + t.qw]
            block.copy_(self._distort(block, hsv))  # HSV is per pixel: only the shown part needs it
            parts.append(tile_boxes(kept, t, out_w, out_h))
        return canvas, np.concatenate(parts)[: self.max_boxes]

    def sample(self, index: int, n: int, load: Callable[[int], tuple[torch.Tensor, np.ndarray]], rng: np.random.Generator, out_w: int, out_h: int) -> tuple[torch.Tensor, np.ndarray]:
        """The training sample of image ``index`` of ``n``: with ``mosaic=1``, half of the time a
        mosaic of it and three images drawn at random (darknet draws all four at random; keeping
        the sample's own image in quadrant 0 keeps every image seen once an epoch), else the image
        alone. ``load(i)`` gives image ``i`` and its boxes; what it raises (an unreadable image)
        reaches the caller."""
        if self.draw_mosaic(rng):
            others = [int(j) for j in rng.integers(n, size=3)]
            return self.mosaic([load(index)] + [load(j) for j in others], rng, out_w, out_h)
        image, boxes = load(index)
        return self(image, boxes, rng, out_w, out_h)

    # -- multi-scale -------------------------------------------------------------------------------

    def net_size(self, rng: np.random.Generator, net_w: int, net_h: int, biggest: bool = False) -> tuple[int, int]:
        """:func:`next_net_size` with this cfg's ``random=`` and ``resize_step=``."""
        return next_net_size(rng, net_w, net_h, self.random, self.flavor, resize_step=self.resize_step, biggest=biggest)


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.size == 0:
        return np.zeros((0, 5), np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(f"boxes must be (N, 5) [cls, xc, yc, w, h], got shape {boxes.shape}")
    return boxes


def eval_transform(image: torch.Tensor, out_w: int, out_h: int, letter_box: bool) -> torch.Tensor:
    """The validation input, darknet-exact (:mod:`cnnlab.darknet.preprocess`): uint8 (C, H, W) →
    float32 (3, out_h, out_w), letterboxed on grey or stretched. pjreddie always letterboxes
    (``BoxAugment.from_net`` sets ``letter_box`` so)."""
    im = (to_rgb(image).numpy().astype(np.float64) / 255.0).astype(np.float32)  # darknet's u8/255.
    out = letterbox(im, out_w, out_h) if letter_box else resize(im, out_w, out_h)
    return torch.from_numpy(out)


def next_net_size(
    rng: np.random.Generator, net_w: int, net_h: int, random_coef: float, flavor: str, *, resize_step: int = 32, biggest: bool = False
) -> tuple[int, int]:
    """The input size darknet's detector trainer switches to every 10 iterations with ``random=``.

    * AlexeyAB (detector.c ``train_detector``): ``random_coef`` is the head's ``random=`` (1 means
      1.4); a factor ``f = rand_scale(coef)`` gives ``roundl(f·net/step + 1)·step`` per side (the
      +1 is darknet's), back to the cfg size when a shrink came out larger; ``biggest`` — what
      darknet uses for the first resize and the last 100 iterations — gives ``roundl(coef·net/step
      + 1)·step``; never under one step.
    * pjreddie (examples/detector.c): square, ``(rand() % 10 + 10)·32`` — 320 … 608 whatever the cfg
      says; ``biggest`` (the last 200 iterations) gives 608.

    ``random_coef`` 0 (``random=0``) keeps the cfg size: darknet does not resize then.
    """
    if random_coef == 0:  # random=0: darknet never resizes
        return net_w, net_h
    if flavor == "pjreddie":
        side = 608 if biggest else int(rng.integers(10, 20)) * 32
        return side, side
    if flavor != "alexeyab":
        raise CnnlabError(f"unknown darknet flavor {flavor!r}; use one of {', '.join(FLAVORS)}")
    coef = 1.4 if random_coef == 1 else float(random_coef)
    step = resize_step
    if biggest:
        w, h = (round_half_away(coef * n / step + 1) * step for n in (net_w, net_h))
    else:
        f = rand_scale(rng, coef)
        w, h = (round_half_away(f * n / step + 1) * step for n in (net_w, net_h))
        if f < 1 and (w > net_w or h > net_h):
            w, h = net_w, net_h
    return max(w, step), max(h, step)
