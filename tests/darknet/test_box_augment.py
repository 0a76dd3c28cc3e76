"""darknet's detector augmentation: boxes follow the pixels, draws are seeded, settings from the cfg."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.darknet.box_augment import (
    BoxAugment,
    eval_transform,
    next_net_size,
    sample_rng,
)
from cnnlab.darknet.box_geometry import (
    Crop,
    Place,
    alexeyab_truth,
    draw_crop,
    pjreddie_truth,
)
from cnnlab.darknet.box_mosaic import tile, to_corner
from cnnlab.darknet.cfg import parse_cfg
from cnnlab.darknet.preprocess import letterbox, resize
from cnnlab.errors import CnnlabError

SEEDS = range(30)
# pure colours on grey; each class is painted in its own colour (class k ↔ COLOURS[k])
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def cfg(net: str = "", head: str = "jitter=.3") -> list:
    return parse_cfg(f"[net]\nwidth=32\nheight=32\nchannels=3\n{net}\n[yolo]\n{head}\n")


def painted(rects: list[tuple[int, int, int, int, int]], w: int = 60, h: int = 40) -> tuple[torch.Tensor, np.ndarray]:
    """A grey w×h image with filled rectangles (cls, x0, y0, x1, y1) and their boxes."""
    im = torch.full((3, h, w), 100, dtype=torch.uint8)
    boxes = []
    for cls, x0, y0, x1, y1 in rects:
        im[:, y0:y1, x0:x1] = torch.tensor(COLOURS[cls], dtype=torch.uint8)[:, None, None]
        boxes.append([cls, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
    return im, np.array(boxes, np.float32).reshape(-1, 5)


def mask_of(out: torch.Tensor, cls: int) -> np.ndarray:
    """Pixels more than half-way to class ``cls``'s colour (edges blend under bilinear resizing)."""
    r, g, b = out.numpy()
    return {0: r - np.maximum(g, b), 1: g - np.maximum(r, b), 2: b - np.maximum(r, g), 3: np.minimum(r, g) - b}[cls] > 0.5


def extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the mask's pixels, edges exclusive; None when empty."""
    ys, xs = np.nonzero(mask)
    return None if xs.size == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def check_follow(out: torch.Tensor, boxes: np.ndarray, classes: list[int], tol: float = 1.0) -> None:
    """Every returned box is where its colour is painted; a dropped class shows at most a sliver."""
    _, h, w = out.shape
    for cls in classes:
        rows = boxes[boxes[:, 0] == cls]
        got = extent(mask_of(out, cls))
        if len(rows) == 0:
            assert got is None or min(got[2] - got[0], got[3] - got[1]) <= 2, (cls, got)
            continue
        assert len(rows) == 1 and got is not None, (cls, rows, got)
        _, xc, yc, bw, bh = rows[0]
        expect = ((xc - bw / 2) * w, (yc - bh / 2) * h, (xc + bw / 2) * w, (yc + bh / 2) * h)
        np.testing.assert_allclose(got, expect, atol=tol, err_msg=f"class {cls}")


@pytest.mark.parametrize(
    "flavor, net",
    [("alexeyab", ""), ("alexeyab", "letter_box=1"), ("alexeyab", "flip=0"), ("pjreddie", "")],
)
def test_boxes_follow_the_painted_rectangles_through_jitter_flip_and_letterbox(flavor: str, net: str) -> None:
    aug = BoxAugment.from_net(cfg(net), flavor)
    im, boxes = painted([(0, 4, 5, 20, 18), (2, 30, 20, 55, 36)])
    flips = 0
    for seed in SEEDS:
        out, kept = aug(im, boxes, sample_rng(7, seed), 32, 24)
        assert out.shape == (3, 24, 32) and out.dtype == torch.float32
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        check_follow(out, kept, [0, 2])
        red = extent(mask_of(out, 0))
        flips += red is not None and red[0] > 16  # the red box (left in the source) lands on the right
    if "flip=0" in net:
        assert flips == 0
    else:
        assert 5 < flips < len(SEEDS) - 5


def test_letter_box_keeps_the_aspect_and_pads_with_the_mean_colour() -> None:
    aug = BoxAugment.from_net(cfg("letter_box=1\nflip=0", "jitter=0"), "alexeyab")
    im, boxes = painted([(0, 20, 8, 40, 32)])
    out, kept = aug(im, boxes, sample_rng(0, 0), 30, 30)
    # 60×40 into 30×30: the image is 30×20, with 5 rows of padding above and below
    assert extent(mask_of(out, 0)) == (10, 9, 20, 21)
    np.testing.assert_allclose(kept, [[0, 0.5, 0.5, 10 / 30, 12 / 30]], atol=1e-6)
    mean = im.float().mean(dim=(1, 2)).round() / 255
    np.testing.assert_allclose(out[:, :5, :].numpy(), mean[:, None, None].expand(3, 5, 30).numpy(), atol=1e-6)
    plain = BoxAugment.from_net(cfg("flip=0", "jitter=0"), "alexeyab")
    out, kept = plain(im, boxes, sample_rng(0, 0), 30, 30)
    assert extent(mask_of(out, 0)) == (10, 6, 20, 24)  # stretched: rows 8…32 of 40 → 6…24 of 30
    np.testing.assert_allclose(kept, [[0, 0.5, 0.5, 10 / 30, 18 / 30]], atol=1e-6)


def test_mosaic_tiles_four_images_and_cuts_their_boxes_at_the_quadrants() -> None:
    aug = BoxAugment.from_net(cfg("mosaic=1"), "alexeyab")
    assert aug.use_mosaic
    samples = [painted([(k, 10 + 3 * k, 8, 40 + 2 * k, 30)]) for k in range(4)]
    cut_boxes = 0
    for seed in SEEDS:
        out, kept = aug.mosaic(samples, sample_rng(3, seed), 48, 40)
        assert out.shape == (3, 40, 48)
        check_follow(out, kept, [0, 1, 2, 3])
        # each image stays in its quadrant: red (0) top left, green (1) top right, blue (2) bottom left
        for cls in range(3):
            got = extent(mask_of(out, cls))
            if got is not None:
                x0, y0, x1, y1 = got
                assert (x1 <= 48 * 0.8 + 1) if cls in (0, 2) else (x0 >= 48 * 0.2 - 1)
                assert (y1 <= 40 * 0.8 + 1) if cls in (0, 1) else (y0 >= 40 * 0.2 - 1)
        cut_boxes += len(kept)
    assert cut_boxes > 2 * len(SEEDS)  # most tiles show their rectangle


def test_mosaic_with_empty_boxes_and_grey_images() -> None:
    aug = BoxAugment.from_net(cfg("mosaic=1"), "alexeyab")
    grey = torch.full((1, 20, 30), 90, dtype=torch.uint8)
    out, kept = aug.mosaic([(grey, np.zeros((0, 5), np.float32))] * 4, sample_rng(0, 1), 32, 32)
    assert out.shape == (3, 32, 32) and kept.shape == (0, 5)
    np.testing.assert_allclose(out.numpy(), 90 / 255, atol=1e-6)
    with pytest.raises(ValueError, match="4 samples"):
        aug.mosaic([(grey, np.zeros((0, 5)))] * 3, sample_rng(0, 1), 32, 32)


@pytest.mark.parametrize("flavor", ["alexeyab", "pjreddie"])
def test_same_seed_same_sample_other_seed_other_sample(flavor: str) -> None:
    aug = BoxAugment.from_net(cfg("hue=.1\nsaturation=1.5\nexposure=1.5"), flavor)
    im, boxes = painted([(0, 4, 5, 20, 18), (1, 30, 20, 55, 36)])
    a, ba = aug(im, boxes, sample_rng(5, 11), 32, 32)
    b, bb = aug(im, boxes, sample_rng(5, 11), 32, 32)
    assert torch.equal(a, b) and np.array_equal(ba, bb)
    others = [aug(im, boxes, sample_rng(5, k), 32, 32) for k in range(12, 16)]
    assert all(not torch.equal(a, o) for o, _ in others)
    assert any(not np.array_equal(ba, ob) for _, ob in others)


@pytest.mark.parametrize("flavor", ["alexeyab", "pjreddie"])
def test_hsv_changes_the_colours_but_not_the_boxes(flavor: str) -> None:
    plain = BoxAugment.from_net(cfg(), flavor)
    hsv = BoxAugment.from_net(cfg("hue=.1\nsaturation=1.5\nexposure=1.5"), flavor)
    im, boxes = painted([(0, 4, 5, 20, 18), (1, 30, 20, 55, 36)])
    changed = 0
    for seed in range(10):
        a, ba = plain(im, boxes, sample_rng(1, seed), 32, 32)
        b, bb = hsv(im, boxes, sample_rng(1, seed), 32, 32)
        assert np.array_equal(ba, bb)
        changed += not torch.allclose(a, b, atol=1e-3)
    assert changed >= 8


@pytest.mark.parametrize("flavor", ["alexeyab", "pjreddie"])
def test_empty_boxes_and_grey_images(flavor: str) -> None:
    aug = BoxAugment.from_net(cfg("hue=.1\nexposure=1.5"), flavor)
    grey = torch.randint(0, 256, (1, 20, 30), dtype=torch.uint8)
    out, kept = aug(grey, np.zeros((0, 5), np.float32), sample_rng(0, 0), 32, 32)
    assert out.shape == (3, 32, 32) and kept.shape == (0, 5) and kept.dtype == np.float32
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # grey stays grey (hue has no effect)
    out, kept = aug(grey, np.array([]), sample_rng(0, 0), 32, 32)  # a label file with no lines
    assert kept.shape == (0, 5)


def test_tiny_invalid_and_outside_boxes_are_dropped_as_darknet_does() -> None:
    aug = BoxAugment.from_net(cfg("flip=0", "jitter=0"), "alexeyab")
    im = torch.full((3, 64, 64), 100, dtype=torch.uint8)
    boxes = np.array(
        [
            [0, 0.5, 0.5, 0.2, 0.2],  # kept
            [1, 0.5, 0.5, 0.02, 0.2],  # 0.64 px wide at 32×32: under one network pixel
            [2, 0.0, 0.0, 0.1, 0.1],  # x = y = 0: darknet's "wrong annotation"
            [3, 1.5, 0.5, 0.2, 0.2],  # wholly right of the image
            [4, 0.95, 0.5, 0.2, 0.2],  # half outside: clamped to the image
        ],
        np.float32,
    )
    _, kept = aug(im, boxes, sample_rng(0, 0), 32, 32)
    np.testing.assert_allclose(kept, [[0, 0.5, 0.5, 0.2, 0.2], [4, 0.925, 0.5, 0.15, 0.2]], atol=1e-6)
    pj = BoxAugment.from_net(cfg("", "jitter=0"), "pjreddie")  # pjreddie drops under 0.001 only
    _, kept = pj(im, boxes[:2], sample_rng(0, 0), 32, 32)
    assert sorted(kept[:, 0]) == [0, 1]


def test_max_boxes_caps_the_boxes_kept() -> None:
    aug = BoxAugment.from_net(cfg("", "jitter=0\nmax=3"), "alexeyab")
    boxes = np.array([[k, 0.1 + 0.1 * k, 0.5, 0.05, 0.2] for k in range(8)], np.float32)
    _, kept = aug(torch.zeros(3, 64, 64, dtype=torch.uint8), boxes, sample_rng(0, 0), 64, 64)
    assert len(kept) == 3 and len(set(kept[:, 0])) == 3


def test_from_net_reads_the_cfg_as_each_darknet_does() -> None:
    secs = parse_cfg(
        "[net]\nwidth=32\nheight=32\nchannels=3\nhue=.1\nsaturation=1.5\nexposure=1.4\nflip=0\nletter_box=1\n"
        "mixup=1\nblur=0\ngaussian_noise=20\nresize_step=64\n"
        "[yolo]\njitter=.1\nrandom=0\n[yolo]\njitter=.3\nrandom=1.2\nresize=1.5\nmax=50\n"
    )
    ab = BoxAugment.from_net(secs, "alexeyab")
    assert (ab.jitter, ab.resize, ab.random, ab.max_boxes) == (0.3, 1.5, 1.2, 50)  # the last head
    assert (ab.hue, ab.saturation, ab.exposure, ab.flip, ab.letter_box, ab.resize_step) == (0.1, 1.5, 1.4, False, True, 64)
    assert ab.unsupported == ("mixup", "gaussian_noise")  # blur=0 is off
    pj = BoxAugment.from_net(secs, "pjreddie")  # no flip=, letter_box=, resize= in pjreddie; random is an int
    assert (pj.flip, pj.letter_box, pj.resize, pj.random, pj.unsupported) == (True, True, 1.0, 1.0, ())
    region = BoxAugment.from_net(parse_cfg("[net]\nwidth=32\nheight=32\nchannels=3\n[region]\n"), "pjreddie")
    assert (region.jitter, region.max_boxes, region.random) == (0.2, 30, 0.0)  # darknet's defaults


def test_from_net_refuses_what_darknet_refuses() -> None:
    with pytest.raises(CnnlabError, match=r"letter_box=1 and mosaic=1 cannot be combined .*; remove one"):
        BoxAugment.from_net(cfg("mosaic=1\nletter_box=1"), "alexeyab")
    with pytest.raises(CnnlabError, match=r"no \[yolo\] or \[region\] section"):
        BoxAugment.from_net(parse_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n[softmax]\n"), "alexeyab")
    with pytest.raises(CnnlabError, match="unknown darknet flavor"):
        BoxAugment.from_net(cfg(), "darknet3")


@pytest.mark.parametrize("letter_box", [False, True])
def test_eval_transform_is_darknets_inference_preprocessing(letter_box: bool) -> None:
    im = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    ref = (im.numpy().astype(np.float64) / 255).astype(np.float32)
    expect = letterbox(ref, 16, 16) if letter_box else resize(ref, 16, 16)
    assert np.array_equal(eval_transform(im, 16, 16, letter_box).numpy(), expect)
    assert eval_transform(im[:1], 16, 16, letter_box).shape == (3, 16, 16)


def test_next_net_size_alexeyab_is_random_scale_of_the_cfg_size_in_steps() -> None:
    rng = np.random.default_rng(0)
    sizes = [next_net_size(rng, 416, 416, 1.0, "alexeyab") for _ in range(300)]
    ws = {w for w, _ in sizes}
    assert all(w == h and w % 32 == 0 and 320 <= w <= 608 for w, h in sizes)  # 416/1.4 … 416·1.4, darknet's +1 step
    assert len(ws) >= 8 and min(ws) == 320 and max(ws) == 608
    assert next_net_size(rng, 416, 416, 1.0, "alexeyab", biggest=True) == (608, 608)
    assert next_net_size(rng, 416, 416, 1.2, "alexeyab", biggest=True) == (544, 544)  # random=1.2 is the factor
    rect = {next_net_size(rng, 320, 192, 1.0, "alexeyab", resize_step=64) for _ in range(200)}
    assert all(w % 64 == 0 and h % 64 == 0 and 320 <= w <= 512 and 192 <= h <= 320 for w, h in rect)
    assert min(next_net_size(rng, 32, 32, 4.0, "alexeyab")) >= 32  # never under one step
    assert next_net_size(rng, 416, 288, 0.0, "alexeyab") == (416, 288)  # random=0: no resizing
    assert next_net_size(rng, 416, 288, 0.0, "pjreddie") == (416, 288)


def test_next_net_size_pjreddie_is_320_to_608_square() -> None:
    rng = np.random.default_rng(0)
    sizes = {next_net_size(rng, 64, 64, 1.0, "pjreddie") for _ in range(300)}
    assert sizes == {(s, s) for s in range(320, 609, 32)}
    assert next_net_size(rng, 64, 64, 1.0, "pjreddie", biggest=True) == (608, 608)


def test_net_size_uses_the_cfg() -> None:
    aug = BoxAugment.from_net(cfg("resize_step=64", "random=1"), "alexeyab")
    assert aug.net_size(np.random.default_rng(0), 256, 256, biggest=True) == (448, 448)  # roundl(1.4·4 + 1)·64


def test_mosaic_boxes_crossing_a_cut_are_cut_where_the_pixels_are() -> None:
    """Full-width stripes: when a window pads, darknet's shift skips a little real image too, so a
    stripe runs up to the cut; its box must stop there, as its pixels do."""
    aug = BoxAugment.from_net(cfg("mosaic=1", "jitter=.4"), "alexeyab")
    samples = [painted([(k, 0, 12, 60, 28)]) for k in range(4)]
    at_cut = 0
    for seed in SEEDS:
        out, kept = aug.mosaic(samples, sample_rng(4, seed), 48, 40)
        check_follow(out, kept, [0, 1, 2, 3])
        red = kept[kept[:, 0] == 0]
        at_cut += len(red) > 0 and red[0, 1] * 48 + red[0, 3] * 48 / 2 >= 48 * 0.2  # reaches the vertical cut
    assert at_cut > 5


class FixedDraws:
    """A stand-in generator whose random() returns given numbers, to work darknet's arithmetic by hand."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def random(self, size: int | None = None) -> float | np.ndarray:
        if size is None:
            return self.values.pop(0)
        out, self.values = np.array(self.values[:size]), self.values[size:]
        return out


def test_the_window_is_darknets_integer_arithmetic() -> None:
    # 100×50 image, jitter .3 (dw 30, dh 15), resize 1.5 (zoom -25…16 across, -12…8 down), letter_box into 64×64
    rng = FixedDraws([0.25, 0.8125, 0.125, 0.875, 0.5, 0.0])  # zoom draws, then the four sides
    crop = draw_crop(rng, 100, 50, 64, 64, 0.3, 1.5, letter_box=False)
    # pleft = (int)(int(0.125·60 − 30) + (0.25·41 − 25)) = (int)(−22 − 14.75) = −36, pright = (int)(22 + 8.3125) = 30,
    # ptop = 0 + (0.25·20 − 12) = −7, pbot = (int)(−15 + (0.8125·20 − 12)) = (int)(−10.75) = −10 (C truncates the sum)
    assert (crop.pleft, crop.pright, crop.ptop, crop.pbot) == (-36, 30, -7, -10)
    crop = draw_crop(FixedDraws([0.25, 0.8125, 0.125, 0.875, 0.5, 0.0]), 100, 50, 64, 64, 0.3, 1.5, letter_box=True)
    assert (crop.pleft, crop.pright, crop.ptop, crop.pbot) == (-36, 30, -32, -35)  # 25 more rows each side
    assert (crop.swidth, crop.sheight) == (106, 117)


def test_mosaic_tiles_skip_the_padding_and_corner_moves_follow_darknets_table() -> None:
    # 50×50 image in a 100×100 mosaic cut at (40, 30): 10 px of padding left and right (20 output px by
    # darknet's w/ow), 5 cut on top, 20 padded at the bottom (40 output px)
    crop = Crop(-10, -10, 5, -20, 50, 50)
    t0, t3 = tile(0, 40, 30, 100, 100, crop), tile(3, 40, 30, 100, 100, crop)
    assert (t0.sx, t0.sy, t0.dx, t0.dy, t0.qw, t0.qh) == (100 - 40 - 20, 100 - 30 - 40, 0, 0, 40, 30)
    assert (t3.sx, t3.sy, t3.dx, t3.dy, t3.qw, t3.qh) == (20, 0, 40, 30, 60, 70)
    c = Crop(3, 4, 5, 6, 50, 50)
    sides = lambda c: (c.pleft, c.pright, c.ptop, c.pbot)
    assert [sides(to_corner(c, k, flip=False)) for k in range(4)] == [(0, 7, 0, 11), (7, 0, 0, 11), (0, 7, 11, 0), (7, 0, 11, 0)]
    assert [sides(to_corner(c, k, flip=True)) for k in range(4)] == [(7, 0, 0, 11), (0, 7, 0, 11), (7, 0, 11, 0), (0, 7, 11, 0)]


def test_mosaic_distorts_each_tile_with_its_own_draws() -> None:
    aug = BoxAugment.from_net(cfg("mosaic=1\nexposure=2"), "alexeyab")
    grey = torch.full((3, 20, 30), 100, dtype=torch.uint8)
    none = np.zeros((0, 5), np.float32)
    levels = set()
    for seed in range(4):
        out, _ = aug.mosaic([(grey, none)] * 4, sample_rng(2, seed), 40, 40)
        flat = out[0].numpy()
        corners = [flat[0, 0], flat[0, -1], flat[-1, 0], flat[-1, -1]]  # one pixel of each quadrant
        for c, quadrant in zip(corners, [flat[:8, :8], flat[:8, -8:], flat[-8:, :8], flat[-8:, -8:]]):
            np.testing.assert_allclose(quadrant, c, atol=1e-6)  # one factor per tile (8 px is inside any cut)
            assert 100 / 255 / 2 - 1e-6 <= c <= 100 / 255 * 2 + 1e-6
        levels.update(np.round(corners, 4).tolist())
    assert len(levels) >= 12  # the four tiles of a mosaic are darkened/brightened independently
    a, ba = aug.mosaic([painted([(k, 10, 8, 40, 30)]) for k in range(4)], sample_rng(2, 9), 40, 40)
    b, bb = aug.mosaic([painted([(k, 10, 8, 40, 30)]) for k in range(4)], sample_rng(2, 9), 40, 40)
    assert torch.equal(a, b) and np.array_equal(ba, bb)


def test_sample_makes_a_mosaic_about_half_of_the_time_only_when_the_cfg_asks() -> None:
    images = [painted([(k % 4, 10, 8, 40, 30)]) for k in range(6)]
    loaded: list[int] = []

    def load(i: int) -> tuple[torch.Tensor, np.ndarray]:
        loaded.append(i)
        return images[i]

    mosaic = BoxAugment.from_net(cfg("mosaic=1"), "alexeyab")
    counts = []
    for k in range(40):
        loaded.clear()
        out, _ = mosaic.sample(k % 6, 6, load, sample_rng(0, k), 32, 32)
        assert out.shape == (3, 32, 32) and loaded[0] == k % 6
        counts.append(len(loaded))
    assert set(counts) == {1, 4} and 10 < counts.count(4) < 30
    plain = BoxAugment.from_net(cfg(), "alexeyab")
    loaded.clear()
    a, ba = plain.sample(2, 6, load, sample_rng(0, 5), 32, 32)
    b, bb = plain(*images[2], sample_rng(0, 5), 32, 32)  # no mosaic: no extra draw, the plain sample
    assert loaded == [2] and torch.equal(a, b) and np.array_equal(ba, bb)


def test_box_arithmetic_matches_darknets_fill_truth_detection() -> None:
    """Golden rows from each darknet's own fill_truth_detection (tests/darknet/make_box_reference.py):
    windows and placements with boxes inside, across the edges, outside, tiny and at x = y = 0."""
    ref = json.loads((Path(__file__).parent / "reference" / "box_truth.json").read_text())
    compared = 0
    for flavor in ("alexeyab", "pjreddie"):
        for case in ref[flavor]:
            boxes = np.array(case["boxes"], np.float32).reshape(-1, 5)
            w, h = case["net"]
            if flavor == "alexeyab":
                ours = alexeyab_truth(boxes, Crop(*case["window"], case["ow"], case["oh"]), bool(case["flip"]), w, h, 200, sample_rng(0, 0))
            else:
                ours = pjreddie_truth(boxes, Place(*case["window"]), bool(case["flip"]), w, h, 200, sample_rng(0, 0))
            theirs = np.array(case["darknet"], np.float32).reshape(-1, 5)
            assert len(ours) == len(theirs), (flavor, case)
            ours = ours[np.lexsort(ours.T[::-1])]  # darknet's rows are stored sorted
            np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=f"{flavor} {case}")
            compared += len(theirs)
    assert compared > 300


def test_without_opencv_the_window_repeats_the_edges_and_uses_darknets_resize() -> None:
    im, boxes = painted([(0, 20, 8, 40, 32)])
    plain = BoxAugment.from_net(cfg("letter_box=1\nflip=0", "jitter=0"), "alexeyab", opencv=False)
    assert not plain.opencv
    out, kept = plain(im, boxes, sample_rng(0, 0), 30, 30)
    ref = (im.numpy().astype(np.float64) / 255).astype(np.float32)
    rows = np.clip(np.arange(-10, 50), 0, 39)  # the 60×60 letterbox window: 10 rows above and below, edge-repeated
    assert np.array_equal(out.numpy(), resize(ref[:, rows, :], 30, 30))
    np.testing.assert_allclose(kept, [[0, 0.5, 0.5, 10 / 30, 12 / 30]], atol=1e-6)
    for seed in SEEDS:  # and the boxes still follow the pixels under jitter
        aug = BoxAugment.from_net(cfg(), "alexeyab", opencv=False)
        two, boxes2 = painted([(0, 4, 5, 20, 18), (2, 30, 20, 55, 36)])
        out, kept = aug(two, boxes2, sample_rng(8, seed), 32, 24)
        check_follow(out, kept, [0, 2], tol=1.5)


def test_image_path_without_opencv_is_darknets_bit_for_bit() -> None:
    """AlexeyAB's loader without OpenCV (crop_image, resize_image, flip_image, distort_image), run by
    darknet itself on reference_image() (tests/darknet/make_box_reference.py): the window, resize
    and flip are bit-identical; HSV matches to float rounding."""
    import hashlib

    from cnnlab.darknet.box_geometry import crop_resize_plain
    from cnnlab.darknet.hsv import distort_fast

    from .make_box_reference import reference_image

    im = torch.from_numpy(reference_image().transpose(2, 0, 1).copy())
    cases = json.loads((Path(__file__).parent / "reference" / "box_truth.json").read_text())["alexeyab_images"]
    exact = 0
    for case in cases:
        w, h = case["out"]
        out = crop_resize_plain(im, Crop(*case["window"], 70, 45), w, h)
        out = (out.flip(-1) if case["flip"] else out).contiguous().numpy()
        if "sha256" in case:
            assert hashlib.sha256(out.tobytes()).hexdigest() == case["sha256"], case
            exact += 1
        else:
            dhue, dsat, dexp = case["hsv"]
            np.testing.assert_allclose(distort_fast(out, dhue, dsat, dexp).ravel(), case["darknet"], atol=5e-6)
    assert exact >= 12


def test_from_a_built_network_uses_its_flavor_and_cfg() -> None:
    from cnnlab.darknet.model import DarknetNet

    from .refdata import REF

    v4 = BoxAugment.from_net(DarknetNet.from_cfg(REF / "cfg" / "yolov4-tiny.cfg", "alexeyab"))
    assert (v4.flavor, v4.jitter, v4.resize, v4.random, v4.hue, v4.saturation, v4.exposure) == ("alexeyab", 0.3, 1.5, 0.0, 0.1, 1.5, 1.5)
    v3 = BoxAugment.from_net(DarknetNet.from_cfg(REF / "cfg" / "yolov3-tiny.cfg", "pjreddie"))
    assert (v3.flavor, v3.jitter, v3.random, v3.letter_box, v3.max_boxes) == ("pjreddie", 0.3, 1.0, True, 90)
