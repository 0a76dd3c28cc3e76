"""calc_anchors' k-means (1 − IoU distance, darknet's float32 updates), seeded."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.darknet.anchors import cfg_with_anchors, kmeans_anchors, shape_iou
from cnnlab.errors import CnnlabError


def clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated groups of box sizes (pixels), 60 boxes each, ±5 % noise."""
    rng = np.random.default_rng(seed)
    centres = np.array([[10, 14], [60, 40], [200, 180]], np.float64)
    boxes = np.concatenate([c * rng.uniform(0.95, 1.05, (60, 2)) for c in centres])
    return rng.permutation(boxes).astype(np.float32), centres


def test_same_seed_same_anchors() -> None:
    boxes = np.random.default_rng(3).uniform(5, 300, (400, 2)).astype(np.float32)
    a, b = kmeans_anchors(boxes, 9, seed=7), kmeans_anchors(boxes, 9, seed=7)
    assert np.array_equal(a.anchors, b.anchors) and a.iterations == b.iterations and a.avg_iou == b.avg_iou
    assert a.anchors.dtype == np.float32
    areas = a.anchors[:, 0] * a.anchors[:, 1]
    assert (np.diff(areas) >= 0).all()  # sorted by area, as darknet prints them


def test_recovers_separated_centres() -> None:
    """darknet starts from k random boxes; whenever they fall in three different groups the anchors are the
    three group means exactly (float32 sums), i.e. the cluster centres within the noise."""
    boxes, centres = clusters()
    group = shape_iou(boxes, centres.astype(np.float32)).argmax(1)
    hits = 0
    for seed in range(20):
        start = np.random.default_rng(seed).choice(len(boxes), 3, replace=False)  # the draw kmeans_anchors makes
        if len(set(group[start])) < 3:
            continue
        hits += 1
        r = kmeans_anchors(boxes, 3, seed=seed)
        np.testing.assert_allclose(r.anchors, centres, rtol=0.02)
        for j in range(3):
            np.testing.assert_allclose(r.anchors[j], boxes[group == j].mean(0, dtype=np.float64), rtol=1e-5)
        assert r.avg_iou > 90
    assert hits >= 3


def test_tiny_case_by_hand() -> None:
    """Boxes 10x10, 10x20, 40x40, 40x44, k = 2. From any two starting boxes the clusters end as
    {10x10, 10x20} and {40x40, 40x44}: anchors 10x15 and 40x42. IoU of each box with its anchor:
    100/150, 150/200, 1600/1680, 1680/1760 -> average (2/3 + 3/4 + 20/21 + 21/22) / 4 = 83.0898 %."""
    boxes = np.array([[10, 10], [10, 20], [40, 40], [40, 44]], np.float32)
    for seed in range(8):
        r = kmeans_anchors(boxes, 2, seed=seed)
        assert r.anchors.tolist() == [[10, 15], [40, 42]]
        assert r.avg_iou == pytest.approx(100 * (2 / 3 + 3 / 4 + 20 / 21 + 21 / 22) / 4, abs=1e-4)
        assert "%2.2f" % r.avg_iou == "83.09"
        assert r.text(416) == " 10, 15,  40, 42"
        assert r.text(13) == "10.0000,15.0000, 40.0000,42.0000"


def test_identical_starting_boxes_stop_at_once() -> None:
    """darknet's rule: assignments start at 0, so when every box is nearest the first centre (ties go to
    it) the first pass 'converges' with no update. Two equal 40x40 boxes drawn as the start: both anchors
    stay 40x40, 0 iterations."""
    boxes = np.array([[10, 10], [10, 20], [40, 40], [40, 40]], np.float32)
    seed = next(s for s in range(100) if set(np.random.default_rng(s).choice(4, 2, replace=False)) == {2, 3})
    r = kmeans_anchors(boxes, 2, seed=seed)
    assert r.anchors.tolist() == [[40, 40], [40, 40]] and r.iterations == 0


def test_one_cluster_is_the_mean() -> None:
    r = kmeans_anchors(np.array([[10, 10], [20, 30]], np.float32), 1)
    assert r.anchors.tolist() == [[15, 20]]


def test_too_few_boxes() -> None:
    with pytest.raises(CnnlabError, match="only 2 label boxes for 3 clusters"):
        kmeans_anchors(np.ones((2, 2), np.float32), 3)


CFG = """[net]
width=416

[convolutional]
filters=21

[yolo]
mask = 0,1
anchors = 1,2, 3,4
num=2

[region]
num = 2
classes=2
"""


def test_cfg_with_anchors() -> None:
    text = cfg_with_anchors(CFG, " 10, 15,  40, 40", 2, "t.cfg")
    assert text.count("anchors = ") == 2 and "1,2, 3,4" not in text
    assert "[yolo]\nmask = 0,1\nanchors =  10, 15,  40, 40\nnum=2" in text
    assert "[region]\nanchors =  10, 15,  40, 40\nnum = 2\n" in text  # added where the section had none
    assert text.replace("anchors =  10, 15,  40, 40\n", "") == CFG.replace("anchors = 1,2, 3,4\n", "")
    with pytest.raises(CnnlabError, match=r"t.cfg:10: \[yolo\] has num=2 but 3 anchors were computed; run with -num_of_clusters 2"):
        cfg_with_anchors(CFG, "1,1, 2,2, 3,3", 3, "t.cfg")
    with pytest.raises(CnnlabError, match="no \\[yolo\\] or \\[region\\]"):
        cfg_with_anchors("[net]\nwidth=1\n", "1,1", 1, "c.cfg")
