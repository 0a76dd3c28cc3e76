"""mAP as AlexeyAB darknet's ``detector map`` computes and prints it (detector.c: validate_detector_map).

Hand-written rather than torchmetrics/pycocotools because darknet's figures have their own rules, and
matching its printout to the last digit needs all of them:

* A detection is one (box, class) pair with prob > 0 after NMS, in darknet's array order (box-major,
  then class). It matches the truth of its class with the highest IoU above ``iou_thresh`` (the first
  of equal IoUs), computed in float32 as box.c does. Several detections may match one truth.
* Unmatched detections that overlap a ``difficult`` truth of their class are left out of the ranking
  (but still count as FP at ``thresh``, as in darknet).
* TP/FP at ``thresh``: a matched detection with prob > thresh is a TP unless an EARLIER detection of
  the same image (whatever its prob) matched the same truth; everything else above thresh is an FP.
  The average IoU is the float32 sum of the TPs' IoUs divided by TP + FP (darknet's definition).
* Ranking: all detections of all images, a stable sort by prob (glibc's qsort is a merge sort). Going
  down the ranking, a detection is a TP if its truth was not taken by a higher one. Precision and recall
  are doubles; AP is the all-point area (darknet's backward walk), or the mean of the best precision at
  recall ≥ 0, 1/(n-1), … 1 for n = 11 or 101 points. mAP is the plain mean over classes.

:class:`MapAccumulator` takes one image at a time (``add``), combines with others (``merge``, so each
DDP rank measures its share; :func:`gather` combines them), and ``compute`` returns a :class:`MapResult` whose
``lines`` is darknet's printout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnnlab.darknet.detect import Detections
from cnnlab.errors import CnnlabError

f32 = np.float32


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """box.c ``box_iou`` of every row of ``a`` (K, 4) with every row of ``b`` (N, 4), x/y/w/h, in float32.

    0 where the boxes do not overlap or the union is 0, as darknet returns."""
    a = np.asarray(a, f32)[:, None, :]  # (K, 1, 4)
    b = np.asarray(b, f32)[None, :, :]  # (1, N, 4)
    two = f32(2)

    def overlap(x1: np.ndarray, w1: np.ndarray, x2: np.ndarray, w2: np.ndarray) -> np.ndarray:
        left = np.maximum(x1 - w1 / two, x2 - w2 / two)
        right = np.minimum(x1 + w1 / two, x2 + w2 / two)
        return right - left

    w = overlap(a[..., 0], a[..., 2], b[..., 0], b[..., 2])
    h = overlap(a[..., 1], a[..., 3], b[..., 1], b[..., 3])
    inter = np.where((w < 0) | (h < 0), f32(0), w * h)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((inter == 0) | (union == 0), f32(0), iou).astype(f32)


def c_float(fmt: str, value: float) -> str:
    """printf of one float as glibc prints it on x86: a NaN (darknet's 0/0) prints as ``-nan``."""
    return "-nan" if np.isnan(value) else fmt % value


@dataclass
class _Image:
    """What one image leaves for the ranking: its kept detections, in darknet's array order."""

    index: int
    n_truth: int  # non-difficult truths (darknet's unique_truth_count step)
    prob: np.ndarray  # (P,) float32
    cls: np.ndarray  # (P,) int64
    truth: np.ndarray  # (P,) int64: index of the matched truth in this image, -1 if none
    tp_iou: np.ndarray  # (T,) float32: IoUs of the TPs at thresh, in order (summed in float32)


@dataclass
class MapResult:
    """darknet's figures: per-class AP and TP/FP at ``thresh``; precision, recall, F1 (float32, NaN as
    darknet's 0/0); TP/FP/FN; average IoU (0..1, float32); mAP (double)."""

    ap: np.ndarray  # (classes,) float64, 0..1
    class_tp: np.ndarray  # (classes,) int: TP at thresh
    class_fp: np.ndarray  # (classes,) int: FP at thresh
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    avg_iou: float
    map: float
    thresh: float
    iou_thresh: float
    points: int
    detections_count: int
    unique_truth_count: int

    def lines(self, names: list[str]) -> str:
        """The result block of darknet's printout, from the first class line to the mAP line."""
        out = []
        for i, ap in enumerate(self.ap):
            out.append("class_id = %d, name = %s, ap = %2.2f%%   \t (TP = %d, FP = %d) \n"
                       % (i, names[i], ap * 100, self.class_tp[i], self.class_fp[i]))  # fmt: skip
        t = float(f32(self.thresh))
        out.append("\n for conf_thresh = %1.2f, precision = %s, recall = %s, F1-score = %s \n" % (
            t, c_float("%1.2f", self.precision), c_float("%1.2f", self.recall), c_float("%1.2f", self.f1)))
        iou100 = float(f32(self.avg_iou) * f32(100))  # float product, as in C
        out.append(" for conf_thresh = %0.2f, TP = %d, FP = %d, FN = %d, average IoU = %s %% \n"
                   % (t, self.tp, self.fp, self.fn, c_float("%2.2f", iou100)))  # fmt: skip
        out.append("\n IoU threshold = %2.0f %%, " % float(f32(self.iou_thresh) * f32(100)))
        out.append(f"used {self.points} Recall-points \n" if self.points else "used Area-Under-Curve for each unique Recall \n")
        out.append(" mean average precision (mAP@%0.2f) = %f, or %2.2f %% \n"
                   % (float(f32(self.iou_thresh)), self.map, self.map * 100))  # fmt: skip
        return "".join(out)


@dataclass
class MapAccumulator:
    """Collects detections and truths image by image; ``compute`` gives darknet's mAP figures.

    ``classes``: the network's classes; ``iou_thresh``: a detection matches a truth above it (darknet
    -iou_thresh, .5); ``thresh``: the confidence for TP/FP/FN, precision, recall, average IoU (darknet
    -thresh, .25); ``points``: 0 = all-point area (darknet's default), 11 (VOC2007) or 101 (COCO)."""

    classes: int
    iou_thresh: float = 0.5
    thresh: float = 0.25
    points: int = 0
    images: list[_Image] = field(default_factory=list, repr=False)
    truth_count: np.ndarray = field(init=False, repr=False)  # (classes,) non-difficult truths
    class_tp: np.ndarray = field(init=False, repr=False)
    class_fp: np.ndarray = field(init=False, repr=False)
    _indices: set[int] = field(init=False, repr=False)  # the images' indices, for O(1) checks
    _next: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.classes < 1:
            raise CnnlabError(f"mAP needs at least one class, got classes={self.classes}")
        if self.points < 0 or self.points == 1:
            raise CnnlabError(f"-points {self.points}: use 0 (area under the curve), 11 (VOC2007) or 101 (COCO)")
        self.truth_count = np.zeros(self.classes, np.int64)
        self.class_tp = np.zeros(self.classes, np.int64)
        self.class_fp = np.zeros(self.classes, np.int64)
        self._indices = {im.index for im in self.images}
        self._next = max(self._indices, default=-1) + 1  # the default index of the next image

    def add(self, dets: Detections, truth: np.ndarray, difficult: np.ndarray | None = None, index: int | None = None) -> None:
        """One image: ``dets`` relative to the original image after NMS, in darknet's array order;
        ``truth`` (N, 5) [cls, xc, yc, w, h] relative; ``difficult`` (N,) bool. ``index`` orders the images
        (ties in prob keep image order, as darknet); by default the next one. Give each image its index
        in the whole set when several accumulators are merged."""
        truth = np.asarray(truth, f32).reshape(-1, 5)
        hard = np.zeros(len(truth), bool) if difficult is None else np.asarray(difficult, bool).reshape(-1)
        if len(hard) != len(truth):
            raise CnnlabError(f"difficult has {len(hard)} flags for {len(truth)} truth boxes")
        tcls = truth[:, 0].astype(np.int64)
        bad = (tcls < 0) | (tcls >= self.classes) | (truth[:, 0] != tcls)
        if bad.any():
            raise CnnlabError(f"truth class {truth[bad][0, 0]:g} is not a class index 0..{self.classes - 1}")
        idx = self._next if index is None else int(index)
        if idx in self._indices:
            raise CnnlabError(f"image index {idx} was added twice to the mAP accumulator")
        easy, easy_cls = truth[~hard, 1:5], tcls[~hard]
        np.add.at(self.truth_count, easy_cls, 1)

        probs = np.asarray(dets.probs, f32)[:, : self.classes]
        box_i, cls = np.nonzero(probs > 0)  # row-major: darknet's loop over boxes, then classes
        prob = probs[box_i, cls]
        iou = box_iou(dets.boxes, easy)[box_i]  # (P, N)
        ok = (iou > f32(self.iou_thresh)) & (iou > 0) & (easy_cls[None, :] == cls[:, None])
        masked = np.where(ok, iou, f32(-1))
        best = masked.argmax(1) if len(easy) else np.zeros(len(prob), np.int64)  # first of equal IoUs
        rows = np.arange(len(prob))
        hit = ok[rows, best] if len(easy) else np.zeros(len(prob), bool)
        truth_j = np.where(hit, best, -1)
        max_iou = np.where(hit, masked[rows, best] if len(easy) else f32(0), f32(0)).astype(f32)

        keep = hit | ~self._near_difficult(dets, box_i, cls, truth[hard], tcls[hard])
        tp_iou = self._count_at_thresh(prob, cls, truth_j, max_iou)
        self.images.append(_Image(idx, len(easy), prob[keep], cls[keep], truth_j[keep], tp_iou))
        self._indices.add(idx)
        self._next = max(self._next, idx + 1)

    def _near_difficult(self, dets: Detections, box_i: np.ndarray, cls: np.ndarray, hard: np.ndarray, hard_cls: np.ndarray) -> np.ndarray:
        """Detections overlapping a difficult truth of their class above iou_thresh (dropped unless matched)."""
        if not len(hard):
            return np.zeros(len(box_i), bool)
        iou = box_iou(dets.boxes, hard[:, 1:5])[box_i]
        return ((iou > f32(self.iou_thresh)) & (hard_cls[None, :] == cls[:, None])).any(1)

    def _count_at_thresh(self, prob: np.ndarray, cls: np.ndarray, truth_j: np.ndarray, max_iou: np.ndarray) -> np.ndarray:
        """darknet's TP/FP at thresh: a truth already matched by an earlier detection of the image (any
        prob) makes the later one an FP. Returns the TPs' IoUs."""
        first = np.zeros(len(prob), bool)
        matched = np.nonzero(truth_j >= 0)[0]
        _, pos = np.unique(truth_j[matched], return_index=True)
        first[matched[pos]] = True
        above = prob > f32(self.thresh)
        tp = above & first
        fp = above & ~first
        np.add.at(self.class_tp, cls[tp], 1)
        np.add.at(self.class_fp, cls[fp], 1)
        return max_iou[tp]

    def merge(self, other: MapAccumulator) -> MapAccumulator:
        """Adds ``other``'s images (e.g. another DDP rank's) to this one; returns self."""
        same = (self.classes, f32(self.iou_thresh), f32(self.thresh), self.points)
        if same != (other.classes, f32(other.iou_thresh), f32(other.thresh), other.points):
            raise CnnlabError("cannot merge mAP accumulators with different classes, iou_thresh, thresh or points")
        clash = self._indices & other._indices
        if clash:
            raise CnnlabError(f"both mAP accumulators hold image index {min(clash)}; add each image with its index in the whole set")
        self.images.extend(other.images)
        self._indices |= other._indices
        self._next = max(self._next, other._next)
        self.truth_count += other.truth_count
        self.class_tp += other.class_tp
        self.class_fp += other.class_fp
        return self

    def compute(self) -> MapResult:
        images = sorted(self.images, key=lambda im: im.index)
        offsets = np.cumsum([0] + [im.n_truth for im in images])
        prob = _cat([im.prob for im in images], f32)
        cls = _cat([im.cls for im in images], np.int64)
        key = _cat([np.where(im.truth >= 0, im.truth + off, -1) for im, off in zip(images, offsets)], np.int64)
        order = np.argsort(-prob, kind="stable")  # qsort by prob, ties in image order
        ap = np.array([self._class_ap(key[order][cls[order] == c], int(self.truth_count[c])) for c in range(self.classes)])
        tp, fp = int(self.class_tp.sum()), int(self.class_fp.sum())
        unique = int(offsets[-1])
        iou_sum = f32(0)
        for im in images:
            for v in im.tp_iou:  # float32 accumulation in darknet's order
                iou_sum = f32(iou_sum + v)
        avg_iou = f32(iou_sum / f32(tp + fp)) if tp + fp > 0 else iou_sum
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = f32(tp) / (f32(tp) + f32(fp))
            recall = f32(tp) / (f32(tp) + f32(unique - tp))
            f1 = f32(2) * precision * recall / (precision + recall)
        mean = 0.0
        for v in ap.tolist():
            mean += v
        return MapResult(
            ap=ap, class_tp=self.class_tp.copy(), class_fp=self.class_fp.copy(), precision=float(precision),
            recall=float(recall), f1=float(f1), tp=tp, fp=fp, fn=unique - tp, avg_iou=float(avg_iou),
            map=mean / self.classes, thresh=self.thresh, iou_thresh=self.iou_thresh, points=self.points,
            detections_count=len(prob), unique_truth_count=unique,
        )

    def _class_ap(self, keys: np.ndarray, n_truth: int) -> float:
        """AP of one class from its detections' truth keys in rank order (-1: no truth)."""
        if not len(keys):
            return 0.0
        tp = np.zeros(len(keys), bool)
        matched = np.nonzero(keys >= 0)[0]
        _, pos = np.unique(keys[matched], return_index=True)  # a truth counts once: the highest detection
        tp[matched[pos]] = True
        ntp = np.cumsum(tp)
        nfp = np.cumsum(~tp)
        precision = ntp / (ntp + nfp)  # doubles, as darknet's pr_t
        recall = ntp / n_truth if n_truth > 0 else np.zeros(len(keys))
        best = np.maximum.accumulate(precision[::-1])[::-1]  # best precision from each rank on
        if self.points == 0:
            return _area(recall, best)
        return _n_point(recall, best, self.points)


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def gather(acc: MapAccumulator) -> MapAccumulator:
    """All ranks' images in one accumulator, on every rank (``all_gather_object``), when torch.distributed
    is initialised; ``acc`` itself otherwise. Each rank must have added its images with their index in
    the whole set."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return acc
    parts: list[MapAccumulator | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, acc)
    merged = MapAccumulator(acc.classes, acc.iou_thresh, acc.thresh, acc.points)
    for part in parts:
        assert part is not None
        merged.merge(part)
    return merged


def _area(recall: np.ndarray, best: np.ndarray) -> float:
    """darknet's backward walk: each recall step weighted by the best precision at or after the rank
    before it, summed from the last rank to the first (in that order, in doubles); then the first step
    from recall 0."""
    ap = 0.0
    steps = (recall[1:] - recall[:-1]) * best[:-1]
    for v in steps[::-1].tolist():
        ap += v
    return ap + float(recall[0] * best[0])


def _n_point(recall: np.ndarray, best: np.ndarray, points: int) -> float:
    """Mean over recall levels 0, 1/(n-1), … 1 of the best precision at recall ≥ the level (0 if none)."""
    total = 0.0
    for point in range(points):
        level = point * 1.0 / (points - 1)
        i = int(np.searchsorted(recall, level, side="left"))  # recall never decreases
        total += float(best[i]) if i < len(recall) else 0.0
    return total / points
