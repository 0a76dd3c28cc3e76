"""cnnlab.data.boxes: cleaning into the (N, 5) [cls, xc, yc, w, h] convention, with counts."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.data.boxes import BoxFixes, clean_corners, clean_yolo, from_corners, to_corners


def test_clean_boxes_keep_their_values_bit_for_bit() -> None:
    rows = np.array([[0, 0.3, 0.4, 0.2, 0.1], [2, 0.623456789, 0.5, 0.333333, 0.25]])
    out = clean_yolo(rows, classes=3)
    assert out.boxes.dtype == np.float32 and out.boxes.shape == (2, 5)
    assert np.array_equal(out.boxes, rows.astype(np.float32))
    assert out.fixes == BoxFixes(kept=2) and out.keep.all()


def test_yolo_rows_are_clamped_swapped_and_dropped_with_counts() -> None:
    rows = [
        [0, 0.5, 0.5, 0.2, 0.2],  # fine
        [1, 0.95, 0.5, 0.2, 0.2],  # runs past the right edge: x 0.85..1.05 → 0.85..1.0
        [2, 0.5, 0.5, -0.2, 0.2],  # negative width = reversed corners
        [3, 0.5, 0.5, 0.2, 0.2],  # class 3 of 3 classes
        [1.5, 0.5, 0.5, 0.2, 0.2],  # not a whole class
        [0, np.nan, 0.5, 0.1, 0.1],
        [1, 1.5, 0.5, 0.2, 0.2],  # entirely right of the image: nothing left after clamping
        [0, 0.5, 0.5, 0.0, 0.3],  # no width
    ]
    out = clean_yolo(rows, classes=3)
    assert out.keep.tolist() == [True, True, True, False, False, False, False, False]
    np.testing.assert_allclose(out.boxes, [[0, 0.5, 0.5, 0.2, 0.2], [1, 0.925, 0.5, 0.15, 0.2], [2, 0.5, 0.5, 0.2, 0.2]], atol=1e-7)
    assert out.fixes == BoxFixes(kept=3, clamped=1, swapped=1, empty=2, bad_class=2, non_finite=1)
    assert out.fixes.dropped == 5
    assert out.fixes.summary() == ("kept 3 (1 clamped, 1 swapped), dropped 5 (2 empty, 2 with a class outside the names, "
                                   "1 with a NaN or infinite number)")  # fmt: skip


def test_pixel_corners_are_normalised_swapped_and_clamped() -> None:
    # a 100 x 50 image; the second box has reversed x corners and starts left of the image
    out = clean_corners([1, 0], [[10, 20, 30, 40], [50, 5, -5, 25]], classes=2, width=100, height=50)
    np.testing.assert_allclose(out.boxes, [[1, 0.2, 0.6, 0.2, 0.4], [0, 0.25, 0.3, 0.5, 0.4]], atol=1e-7)
    assert out.fixes == BoxFixes(kept=2, clamped=1, swapped=1)


def test_min_size_drops_degenerate_boxes() -> None:
    out = clean_corners([0, 0], [[0, 0, 0.5, 0.0005], [0, 0, 0.5, 0.5]], classes=1, min_size=0.001)
    assert out.keep.tolist() == [False, True] and out.fixes.empty == 1


def test_corner_conversions_round_trip() -> None:
    corners = np.array([[10, 20, 30, 40], [0, 0, 100, 50]], dtype=np.float32)
    boxes = from_corners([4, 7], corners, width=100, height=50)
    np.testing.assert_allclose(boxes, [[4, 0.2, 0.6, 0.2, 0.4], [7, 0.5, 0.5, 1.0, 1.0]], atol=1e-7)
    np.testing.assert_allclose(to_corners(boxes, 100, 50), corners, atol=1e-4)
    np.testing.assert_allclose(to_corners(boxes), corners / [100, 50, 100, 50], atol=1e-7)


def test_no_boxes_and_bad_shapes() -> None:
    out = clean_yolo(np.zeros((0, 5)), classes=3)
    assert out.boxes.shape == (0, 5) and out.fixes == BoxFixes()
    with pytest.raises(ValueError, match="2 classes for 1 boxes"):
        clean_corners([0, 1], [[0, 0, 1, 1]], classes=2)
    with pytest.raises(ValueError, match="not positive"):
        clean_corners([0], [[0, 0, 1, 1]], classes=1, width=0)


def test_fixes_add_up() -> None:
    total = BoxFixes()
    total += BoxFixes(kept=2, clamped=1)
    total += BoxFixes(kept=1, empty=3)
    assert total == BoxFixes(kept=3, clamped=1, empty=3) and total.summary() == "kept 3 (1 clamped), dropped 3 (3 empty)"
