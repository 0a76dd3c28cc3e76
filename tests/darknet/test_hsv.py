"""The closed-form HSV distortion gives darknet's distort_image numbers (the classifier's reference code)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.darknet.augment import distort
from cnnlab.darknet.hsv import distort_fast


def awkward_image() -> np.ndarray:
    """Random colours plus the pixels that take special branches: grey, black, white, channel ties, pure hues."""
    rng = np.random.default_rng(0)
    im = rng.random((3, 24, 24), dtype=np.float32)
    im[:, 0, :4] = 0.3  # grey: saturation 0
    im[:, 0, 4] = 0.0  # black: V 0
    im[:, 0, 5] = 1.0  # white
    im[0, 1, :] = im[1, 1, :]  # red == green (darknet takes red)
    im[1, 2, :] = im[2, 2, :]  # green == blue
    im[:, 3, :6] = np.eye(3, dtype=np.float32).repeat(2, axis=1)  # pure red, green, blue
    return im


@pytest.mark.parametrize("dhue, dsat, dexp", [(0, 1, 1), (0.05, 1.3, 0.8), (0, 1.5, 1.5), (-0.1, 0.7, 1.2), (0.1, 1.5, 1.5), (0.5, 1, 1), (-0.49, 2, 0.5)])
def test_distort_fast_equals_darknets_distort(dhue: float, dsat: float, dexp: float) -> None:
    im = awkward_image()
    fast = distort_fast(im, dhue, dsat, dexp)
    assert fast.dtype == np.float32 and fast.shape == im.shape
    np.testing.assert_allclose(fast, distort(im, dhue, dsat, dexp), atol=1e-5)
    assert np.array_equal(im, awkward_image())  # the input is left alone


def test_distort_fast_takes_strided_views() -> None:
    im = awkward_image()
    view = im[:, 2:20, 3:21]
    np.testing.assert_allclose(distort_fast(view, 0.07, 1.2, 0.9), distort(np.ascontiguousarray(view), 0.07, 1.2, 0.9), atol=1e-5)
