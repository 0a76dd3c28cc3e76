"""mAP on hand-made detections with answers worked out by hand (darknet's validate_detector_map rules).

The main scene (2 classes "a", "b"; 5 truths; iou_thresh .5, thresh .25):

    image 0: truths T1 = a (.3 .3 .2 .2), T2 = a (.5 .5 .2 .2)        (coordinates x y w h)
             detections, in array order:
               d1 a .9  exactly T1                 -> TP (IoU 1)
               d2 a .8  T2 shifted by .1 in x      -> IoU(d2, T2) = .1*.2 / (.04+.04-.02) = 1/3 < .5: FP
               d3 a .7  exactly T1 again           -> duplicate: T1 already taken by d1: FP
               d4 a .6  T2 with h .16              -> IoU = .2*.16 / .04 = .8: TP
    image 1: truths T3 = a (.25 .25 .2 .2), T4 = a (.7 .7 .2 .2), T5 = b (.5 .8 .2 .2)
               d5 b .3  exactly T3 (class a)       -> wrong class: FP for b; T3, T4, T5 missed

Class a, by rank: TP FP FP TP; cumulative TP 1 1 1 2, FP 0 1 2 2 over 4 truths:
    precision 1, 1/2, 1/3, 1/2;  recall .25 .25 .25 .5
    best precision from each rank on: 1, .5, .5, .5
    all-point (darknet walks back from the last rank): (.5-.25)*.5 [step at rank 4, best from rank 3]
        + 0 + 0 + .25*1 [first step, from recall 0] = .125 + .25 = .375
    11-point: levels 0 .1 .2 reach recall .25 -> 1 each; .3 .4 .5 reach only .5 -> .5 each; .6 … 1 -> 0:
        (3*1 + 3*.5) / 11 = 4.5/11 = .4090909
    101-point: levels 0 … .25 (26 levels) -> 1; .26 … .50 (25 levels) -> .5; the rest 0:
        (26 + 12.5) / 101 = 38.5/101 = .3811881
Class b: one FP, no TP: precision 0, recall 0 -> AP 0 under every rule.
mAP = (AP_a + 0) / 2: .1875, .2045455, .1905941.
At thresh .25 every detection counts (d5 .3 > .25): TP d1, d4; FP d2, d3, d5 -> TP 2, FP 3,
FN = 5 - 2 = 3; precision = recall = 2/5 = .4; F1 = 2*.4*.4/.8 = .4; average IoU = (1 + .8) / (TP+FP=5) = .36.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.darknet.detect import Detections
from cnnlab.darknet.map import MapAccumulator, box_iou, gather
from cnnlab.errors import CnnlabError

NAMES = ["a", "b"]


def dets(*rows: tuple[float, float, float, float, list[float]]) -> Detections:
    boxes = np.array([r[:4] for r in rows], np.float32).reshape(-1, 4)
    probs = np.array([r[4] for r in rows], np.float32) if rows else np.zeros((0, 2), np.float32)
    return Detections(boxes, probs.max(1, initial=0), probs)


def truths(*rows: tuple[float, float, float, float, float]) -> np.ndarray:
    return np.array(rows, np.float32).reshape(-1, 5)


def scene(acc: MapAccumulator) -> MapAccumulator:
    acc.add(
        dets((.3, .3, .2, .2, [.9, 0]), (.6, .5, .2, .2, [.8, 0]), (.3, .3, .2, .2, [.7, 0]), (.5, .5, .2, .16, [.6, 0])),
        truths((0, .3, .3, .2, .2), (0, .5, .5, .2, .2)),
    )
    acc.add(dets((.25, .25, .2, .2, [0, .3])), truths((0, .25, .25, .2, .2), (0, .7, .7, .2, .2), (1, .5, .8, .2, .2)))
    return acc


def test_box_iou_by_hand() -> None:
    a = np.array([[.5, .5, .2, .2]], np.float32)
    b = np.array([[.5, .5, .2, .2], [.6, .5, .2, .2], [.5, .5, .2, .16], [.9, .9, .1, .1]], np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1, 1 / 3, .8, 0], rtol=1e-6)
    # float32 as box.c: the overlap of identical boxes is (.5+.1)-(.5-.1), not .2, so their IoU is 1.0000002
    assert box_iou(a, b).dtype == np.float32 and box_iou(a, b)[0, 0] == np.float32(1.0000002)


@pytest.mark.parametrize("points, ap_a, mean, ap_line, map_line", [
    (0, .375, .1875, "37.50%", "0.187500, or 18.75 %"),
    (11, 4.5 / 11, 4.5 / 22, "40.91%", "0.204545, or 20.45 %"),
    (101, 38.5 / 101, 38.5 / 202, "38.12%", "0.190594, or 19.06 %"),
])  # fmt: skip
def test_scene_all_interpolations(points: int, ap_a: float, mean: float, ap_line: str, map_line: str) -> None:
    r = scene(MapAccumulator(2, iou_thresh=.5, thresh=.25, points=points)).compute()
    assert r.ap[0] == pytest.approx(ap_a, abs=1e-12) and r.ap[1] == 0
    assert r.map == pytest.approx(mean, abs=1e-12)
    assert (r.tp, r.fp, r.fn) == (2, 3, 3)
    assert list(r.class_tp) == [2, 0] and list(r.class_fp) == [2, 1]
    assert r.precision == pytest.approx(.4) and r.recall == pytest.approx(.4) and r.f1 == pytest.approx(.4)
    assert r.avg_iou == pytest.approx(.36, abs=1e-6)
    assert (r.detections_count, r.unique_truth_count) == (5, 5)
    how = f"used {points} Recall-points \n" if points else "used Area-Under-Curve for each unique Recall \n"
    assert r.lines(NAMES) == (
        f"class_id = 0, name = a, ap = {ap_line}   \t (TP = 2, FP = 2) \n"
        "class_id = 1, name = b, ap = 0.00%   \t (TP = 0, FP = 1) \n"
        "\n for conf_thresh = 0.25, precision = 0.40, recall = 0.40, F1-score = 0.40 \n"
        " for conf_thresh = 0.25, TP = 2, FP = 3, FN = 3, average IoU = 36.00 % \n"
        f"\n IoU threshold = 50 %, {how}"
        f" mean average precision (mAP@0.50) = {map_line} \n"
    )


def test_perfect_detections_score_one() -> None:
    """Every truth found once, nothing else: AP 1 under every rule, precision = recall = F1 = 1, IoU 100 %."""
    for points in (0, 11, 101):
        acc = MapAccumulator(2, points=points)
        acc.add(dets((.3, .3, .2, .2, [.9, 0]), (.7, .7, .2, .2, [0, .8])), truths((0, .3, .3, .2, .2), (1, .7, .7, .2, .2)))
        acc.add(dets((.5, .5, .4, .4, [.7, 0])), truths((0, .5, .5, .4, .4)))
        r = acc.compute()
        assert list(r.ap) == [1.0, 1.0] and r.map == 1.0
        assert (r.tp, r.fp, r.fn, r.precision, r.recall, r.f1) == (3, 0, 0, 1.0, 1.0, 1.0)
        assert r.avg_iou == pytest.approx(1.0, abs=1e-6)
        assert "ap = 100.00%   \t (TP = 2, FP = 0)" in r.lines(NAMES)
        assert "average IoU = 100.00 %" in r.lines(NAMES)
        assert "(mAP@0.50) = 1.000000, or 100.00 %" in r.lines(NAMES)


def test_a_higher_iou_threshold_turns_a_tp_into_fp() -> None:
    """At iou_thresh .85 d4 (IoU .8) no longer matches T2: class a ranks TP FP FP FP, TP 1 of 4 truths:
    precision 1 1/2 1/3 1/4, recall .25 throughout -> all-point .25*1 = .25; 11-point: levels 0 .1 .2 -> 1,
    3/11; at thresh: TP 1 (d1), FP 4, FN 4; average IoU 1/5; mAP .125."""
    for points, ap in ((0, .25), (11, 3 / 11)):
        r = scene(MapAccumulator(2, iou_thresh=.85, thresh=.25, points=points)).compute()
        assert r.ap[0] == pytest.approx(ap, abs=1e-12) and r.map == pytest.approx(ap / 2, abs=1e-12)
        assert (r.tp, r.fp, r.fn) == (1, 4, 4)
        assert r.avg_iou == pytest.approx(.2)
        assert " IoU threshold = 85 %, " in r.lines(NAMES) and "(mAP@0.85)" in r.lines(NAMES)


def test_a_lower_iou_threshold_lets_the_shifted_box_match() -> None:
    """At iou_thresh .3 d2 (IoU 1/3) matches T2 and takes it before d4: class a ranks TP TP FP FP:
    precision 1 1 2/3 1/2, recall .25 .5 .5 .5, best from each rank 1 1 2/3 1/2 -> all-point
    (.5-.25)*1 + .25*1 = .5. At thresh: d1, d2 TP; d3, d4 (truths taken earlier in the image), d5 FP:
    TP 2 FP 3; average IoU (1 + 1/3) / 5."""
    r = scene(MapAccumulator(2, iou_thresh=.3)).compute()
    assert r.ap[0] == pytest.approx(.5, abs=1e-12)
    assert (r.tp, r.fp, r.fn) == (2, 3, 3)
    assert r.avg_iou == pytest.approx((1 + 1 / 3) / 5, abs=1e-6)


def test_rising_precision_is_interpolated() -> None:
    """Ranking FP TP TP over 2 truths: precision 0 1/2 2/3, recall 0 .5 1. Best precision from each rank
    on is 2/3 everywhere, so every rule gives 2/3 (the raw precision at recall .5 is only 1/2)."""
    for points in (0, 11, 101):
        acc = MapAccumulator(1, points=points)
        acc.add(dets((.8, .8, .1, .1, [.9]), (.3, .3, .2, .2, [.8]), (.6, .3, .2, .2, [.7])),
                truths((0, .3, .3, .2, .2), (0, .6, .3, .2, .2)))  # fmt: skip
        assert acc.compute().ap[0] == pytest.approx(2 / 3, abs=1e-12)


def test_tp_at_thresh_follows_array_order_not_prob() -> None:
    """darknet's quirk: at thresh, an earlier detection IN THE ARRAY takes the truth, whatever its prob.
    One truth; array order: d_a .7 (IoU .8), d_b .9 (IoU 1). Ranking (by prob): d_b TP, d_a FP -> AP 1.
    At thresh: d_a comes first, so d_a is the TP (IoU .8) and d_b the FP: average IoU .8/2 = .4."""
    acc = MapAccumulator(1)
    acc.add(dets((.5, .5, .2, .16, [.7]), (.5, .5, .2, .2, [.9])), truths((0, .5, .5, .2, .2)))
    r = acc.compute()
    assert r.ap[0] == 1.0 and (r.tp, r.fp, r.fn) == (1, 1, 0)
    assert r.avg_iou == pytest.approx(.4, abs=1e-6)


def test_below_thresh_counts_in_ap_not_in_tp_fp() -> None:
    """A detection at .1 (< thresh .25) ranks (AP 1) but is neither TP nor FP at thresh: FN 1, precision 0/0."""
    acc = MapAccumulator(1)
    acc.add(dets((.5, .5, .2, .2, [.1])), truths((0, .5, .5, .2, .2)))
    r = acc.compute()
    assert r.ap[0] == 1.0 and (r.tp, r.fp, r.fn) == (0, 0, 1)
    assert " precision = -nan, recall = 0.00, F1-score = -nan \n" in r.lines(["a"])  # darknet's 0/0 on x86


def test_difficult_truth_neither_counts_nor_penalises_the_ranking() -> None:
    """A difficult truth is not a truth to find; a detection on it leaves the ranking but (as in darknet)
    is still an FP at thresh. Here: one easy truth found (.9), one detection .8 on the difficult truth:
    ranking = [TP] -> AP 1; at thresh TP 1 FP 1; unique truths 1."""
    acc = MapAccumulator(1)
    acc.add(dets((.3, .3, .2, .2, [.9]), (.7, .7, .2, .2, [.8])), truths((0, .3, .3, .2, .2), (0, .7, .7, .2, .2)),
            difficult=np.array([False, True]))  # fmt: skip
    r = acc.compute()
    assert r.ap[0] == 1.0 and (r.tp, r.fp, r.fn) == (1, 1, 0)
    assert (r.detections_count, r.unique_truth_count) == (1, 1)
    plain = MapAccumulator(1)  # without the flag the second box is a missed truth... and found: AP 1, 2 truths
    plain.add(dets((.3, .3, .2, .2, [.9]), (.7, .7, .2, .2, [.8])), truths((0, .3, .3, .2, .2), (0, .7, .7, .2, .2)))
    assert plain.compute().unique_truth_count == 2


def test_merge_equals_one_accumulator() -> None:
    """Images split over two 'ranks' (with their global indices) give the same figures as one pass."""
    whole = scene(MapAccumulator(2)).compute()
    # rank 1 holds image 1, rank 0 image 0: merged in the "wrong" order on purpose
    one = MapAccumulator(2)
    one.add(dets((.25, .25, .2, .2, [0, .3])), truths((0, .25, .25, .2, .2), (0, .7, .7, .2, .2), (1, .5, .8, .2, .2)), index=1)
    zero = MapAccumulator(2)
    zero.add(dets((.3, .3, .2, .2, [.9, 0]), (.6, .5, .2, .2, [.8, 0]), (.3, .3, .2, .2, [.7, 0]), (.5, .5, .2, .16, [.6, 0])),
             truths((0, .3, .3, .2, .2), (0, .5, .5, .2, .2)), index=0)  # fmt: skip
    merged = one.merge(zero).compute()
    assert merged.lines(NAMES) == whole.lines(NAMES)
    assert MapAccumulator(2).compute().map == 0.0  # nothing added: AP 0, no crash
    with pytest.raises(CnnlabError, match="image index 0"):
        scene(MapAccumulator(2)).merge(scene(MapAccumulator(2)))
    with pytest.raises(CnnlabError, match="different"):
        MapAccumulator(2).merge(MapAccumulator(2, points=11))


def test_ties_keep_image_order() -> None:
    """Equal probs keep image order (glibc's merge sort is stable): a FP in image 0 and a TP in image 1,
    both .5, rank FP then TP -> precision 0, 1/2; all-point AP = 1 * 1/2 = .5. Swapped images: TP first -> 1."""
    fp_first = MapAccumulator(1)
    fp_first.add(dets((.8, .8, .1, .1, [.5])), truths())
    fp_first.add(dets((.3, .3, .2, .2, [.5])), truths((0, .3, .3, .2, .2)))
    assert fp_first.compute().ap[0] == .5
    tp_first = MapAccumulator(1)
    tp_first.add(dets((.3, .3, .2, .2, [.5])), truths((0, .3, .3, .2, .2)))
    tp_first.add(dets((.8, .8, .1, .1, [.5])), truths())
    assert tp_first.compute().ap[0] == 1.0


def test_bad_input_is_one_clear_error() -> None:
    with pytest.raises(CnnlabError, match="truth class 3 is not a class index 0..1"):
        MapAccumulator(2).add(dets(), truths((3, .5, .5, .1, .1)))
    with pytest.raises(CnnlabError, match="-points 1"):
        MapAccumulator(2, points=1)
    with pytest.raises(CnnlabError, match="2 flags for 1 truth"):
        MapAccumulator(2).add(dets(), truths((0, .5, .5, .1, .1)), difficult=np.array([False, True]))


def test_gather_over_a_process_group(tmp_path) -> None:
    """gather() through torch.distributed (a one-process gloo group): the same figures as the local ones."""
    import torch.distributed as dist

    acc = scene(MapAccumulator(2))
    assert gather(acc) is acc  # not distributed: itself
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        merged = gather(acc)
    finally:
        dist.destroy_process_group()
    assert merged is not acc and merged.compute().lines(NAMES) == acc.compute().lines(NAMES)
