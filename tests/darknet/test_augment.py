"""darknet's classifier augmentation: off by default, darknet's ranges when on, seeded per sample."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.darknet.augment import Augment, rand_scale, rgb_to_hsv, rotate_crop
from cnnlab.darknet.cfg import parse_cfg

W = H = 16
SAMPLES = range(24)


def augment(options: str = "", flavor: str = "pjreddie", seed: int = 3) -> Augment:
    net = parse_cfg(f"[net]\nwidth={W}\nheight={H}\nchannels=3\nmin_crop=16\nmax_crop=24\n{options}")[0]
    return Augment(net, W, H, seed, flavor)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """Smooth colours plus a little noise, 30×40, values in [0.1, 0.6] (so V×1.5 rarely clips)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:30, 0:40] / 10
    im = np.stack([0.35 + 0.2 * np.sin(2 * x), 0.35 + 0.2 * np.cos(3 * y), 0.35 + 0.2 * np.sin(x + y)])
    return (im + rng.normal(0, 0.01, im.shape)).clip(0.1, 0.6).astype(np.float32)


def outputs(a: Augment, im: np.ndarray) -> list[np.ndarray]:
    return [a(im, k) for k in SAMPLES]


def test_defaults_draw_nothing_and_each_option_changes_images_only_when_set(image: np.ndarray) -> None:
    base = outputs(augment(), image)
    assert all(o.shape == (3, H, W) and o.dtype == np.float32 for o in base)
    # darknet's parser defaults, written out, are the plain crop + flip, bit for bit
    explicit = augment("angle=0\naspect=1\nhue=0\nsaturation=1\nexposure=1\ncenter=0")
    assert all(np.array_equal(a, b) for a, b in zip(base, outputs(explicit, image)))
    for option in ("angle=15", "aspect=1.4", "hue=.2", "saturation=1.8", "exposure=1.8", "center=1"):
        for flavor in ("pjreddie", "alexeyab"):
            changed = [not np.array_equal(a, b) for a, b in zip(base, outputs(augment(option, flavor), image))]
            if option == "center=1" and flavor == "alexeyab":
                assert not any(changed)  # AlexeyAB's classifier loader has no centre crop
            else:
                assert sum(changed) >= len(SAMPLES) - 2, (option, flavor)


def test_rand_scale_is_a_factor_up_to_s_inverted_half_of_the_time() -> None:
    rng = np.random.default_rng(0)
    f = np.array([rand_scale(rng, 1.5) for _ in range(2000)])
    assert f.min() >= 1 / 1.5 and f.max() <= 1.5
    assert 0.45 < np.mean(f < 1) < 0.55
    assert rand_scale(rng, 1.0) == 1.0


def _ratios(base: np.ndarray, out: np.ndarray, channel: int) -> np.ndarray:
    """out/base of HSV channel 1 (S) or 2 (V) over the pixels neither clipped nor near 0."""
    b, o = rgb_to_hsv(base)[channel], rgb_to_hsv(out)[channel]
    keep = (b > 0.05) & (o < 0.995) & (out.min(0) > 0.005)
    return (o / b)[keep]


@pytest.mark.parametrize("channel, option", [(2, "exposure"), (1, "saturation")])
def test_exposure_and_saturation_scale_v_and_s_by_one_factor_within_darknets_range(image: np.ndarray, channel: int, option: str) -> None:
    base, out = outputs(augment(), image), outputs(augment(f"{option}=1.5"), image)
    factors = []
    for b, o in zip(base, out):
        r = _ratios(b, o, channel)
        assert r.size > 20 and np.ptp(r) < 1e-3  # one factor for the whole image
        factors.append(float(np.median(r)))
    assert min(factors) >= 1 / 1.5 - 1e-4 and max(factors) <= 1.5 + 1e-4
    assert min(factors) < 0.95 and max(factors) > 1.05  # darkened and brightened samples both occur
    # hue is untouched by S/V scaling (where nothing clipped)
    for b, o in zip(base, out):
        keep = (o.max(0) < 0.995) & (o.min(0) > 0.005) & (rgb_to_hsv(b)[1] > 0.1)
        dh = (rgb_to_hsv(o)[0] - rgb_to_hsv(b)[0])[keep]
        assert np.abs((dh + 0.5) % 1 - 0.5).max() < 1e-3


def test_hue_shifts_every_pixel_by_one_amount_within_plus_minus_hue(image: np.ndarray) -> None:
    base, out = outputs(augment(), image), outputs(augment("hue=.1"), image)
    shifts = []
    for b, o in zip(base, out):
        keep = rgb_to_hsv(b)[1] > 0.1
        dh = (rgb_to_hsv(o)[0] - rgb_to_hsv(b)[0])[keep]
        dh = (dh + 0.5) % 1 - 0.5  # circular difference
        assert np.ptp(dh) < 1e-3
        shifts.append(float(np.median(dh)))
        np.testing.assert_allclose(o.max(0), b.max(0), atol=1e-5)  # V unchanged
    assert max(abs(s) for s in shifts) <= 0.1 + 1e-4
    assert min(shifts) < -0.02 and max(shifts) > 0.02


def test_rotate_crop_is_darknets_sampling() -> None:
    rng = np.random.default_rng(1)
    im = rng.random((3, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(rotate_crop(im, 0.0, 1.0, 8, 8, 0.0, 0.0, 1.0), im)
    # a quarter turn: out[y, x] = im[x, 8 - y]; row 0 samples column 8, outside the image → 0
    out = rotate_crop(im, np.pi / 2, 1.0, 8, 8, 0.0, 0.0, 1.0)
    np.testing.assert_allclose(out[:, 1:, :], im[:, :, ::-1].transpose(0, 2, 1)[:, :7, :], atol=1e-5)
    np.testing.assert_allclose(out[:, 0, :], 0, atol=1e-5)
    # scale 2 and aspect 2: x steps of 1 in the output are 1 source pixel, y steps half a pixel
    out = rotate_crop(im, 0.0, 2.0, 8, 8, 0.0, 0.0, 2.0)
    np.testing.assert_allclose(out[:, 0, :], im[:, 2, :], atol=1e-6)
    np.testing.assert_allclose(out[:, 1, :], (im[:, 2, :] + im[:, 3, :]) / 2, atol=1e-6)


def test_every_draw_is_seeded_by_the_sample(image: np.ndarray) -> None:
    opts = "angle=10\naspect=1.2\nhue=.1\nsaturation=1.5\nexposure=1.5"
    for flavor in ("pjreddie", "alexeyab"):
        a, again, other = augment(opts, flavor), augment(opts, flavor), augment(opts, flavor, seed=4)
        assert all(np.array_equal(x, y) for x, y in zip(outputs(a, image), outputs(again, image)))
        assert np.array_equal(a(image, 5), a(image, 5)) and not np.array_equal(a(image, 5), a(image, 6))
        assert not np.array_equal(a(image, 5), other(image, 5))
        assert all(0 <= o.min() and o.max() <= 1 for o in outputs(a, image))


def test_alexeyab_only_options_are_reported_as_unsupported() -> None:
    assert augment("mixup=3\nlabel_smooth_eps=0.1\nblur=0").unsupported == ["mixup", "label_smooth_eps"]
