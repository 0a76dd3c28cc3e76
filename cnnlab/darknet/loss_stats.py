"""What a darknet detection layer reports about its deltas, and the checks shared by [yolo] and [region].

:class:`LayerDelta` carries one layer's delta (darknet's ``l.delta``), its cost (``l.cost``) and the
counters forward_yolo_layer / forward_region_layer keep, with the per-layer line each darknet prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cnnlab.errors import NonFiniteLoss


@dataclass
class LayerDelta:
    """One detection layer's training delta and statistics for a batch.

    ``delta`` has the shape of the layer's output (B, n*(k+1+C), H, W) and is darknet's delta with
    respect to the *activated* output (minus the gradient of darknet's loss); ``cost`` is ``*(l.cost)``.
    Sums (``tot_*``) are over the truth boxes matched to an anchor (``count`` of them), ``tot_anyobj``
    over all ``cells`` (B·n·H·W predictions).
    """

    index: int  # layer index in the cfg (darknet's "Region %d")
    kind: str  # "yolo" | "region"
    flavor: str  # "pjreddie" | "alexeyab"
    delta: torch.Tensor
    cost: float
    loss: float  # |delta|², darknet's total before dividing by the batch
    class_loss: float  # obj_normalizer·|delta without x,y,w,h|² (AlexeyAB's split)
    batch: int
    cells: int
    count: int = 0
    class_count: int = 0
    tot_iou: float = 0.0
    tot_giou: float = 0.0
    tot_diou: float = 0.0
    tot_ciou: float = 0.0
    tot_cat: float = 0.0  # output of the true class at matched anchors
    tot_obj: float = 0.0  # objectness at matched anchors
    tot_anyobj: float = 0.0  # objectness everywhere
    n_recall50: int = 0  # matched truths whose anchor's box has IoU > .5
    n_recall75: int = 0  # ... > .75
    total_bbox: int = 0  # box deltas written (AlexeyAB's net.total_bbox)
    rewritten_bbox: int = 0  # of those, onto an anchor that already had one
    skipped_truths: int = 0  # boxes whose class is not below classes= (darknet warns and skips them)
    iou_loss_kind: str = "mse"
    iou_normalizer: float = 1.0
    obj_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    show_details: bool = True

    @property
    def iou_loss(self) -> float:
        return self.loss - self.class_loss

    def _avg(self, total: float, n: int) -> float:
        """AlexeyAB's [yolo] divides by max(n, 1); the others divide by n (0/0 prints -nan)."""
        if self.flavor == "alexeyab" and self.kind == "yolo":
            return total / max(n, 1)
        return total / n if n else math.nan

    @property
    def avg_iou(self) -> float:
        return self._avg(self.tot_iou, self.count)

    @property
    def avg_giou(self) -> float:
        return self._avg(self.tot_giou, self.count)

    @property
    def avg_cat(self) -> float:
        return self._avg(self.tot_cat, self.class_count)

    @property
    def avg_obj(self) -> float:
        return self._avg(self.tot_obj, self.count)

    @property
    def avg_anyobj(self) -> float:
        return self.tot_anyobj / self.cells

    @property
    def recall50(self) -> float:
        return self._avg(self.n_recall50, self.count)

    @property
    def recall75(self) -> float:
        return self._avg(self.n_recall75, self.count)

    def line(self) -> str:
        """The line darknet prints for this layer after the forward pass (without the newline)."""
        if self.kind == "region":
            return (
                f"Region Avg IOU: {_cf(self.avg_iou)}, Class: {_cf(self.avg_cat)}, Obj: {_cf(self.avg_obj)}, "
                f"No Obj: {_cf(self.avg_anyobj)}, Avg Recall: {_cf(self.recall50)},  count: {self.count}"
            )
        if self.flavor == "pjreddie":
            return (
                f"Region {self.index} Avg IOU: {_cf(self.avg_iou)}, Class: {_cf(self.avg_cat)}, Obj: {_cf(self.avg_obj)}, "
                f"No Obj: {_cf(self.avg_anyobj)}, .5R: {_cf(self.recall50)}, .75R: {_cf(self.recall75)},  count: {self.count}"
            )
        name = "mse" if self.iou_loss_kind == "mse" else "giou" if self.iou_loss_kind == "giou" else "iou"
        head = (
            f"v3 ({name} loss, Normalizer: (iou: {self.iou_normalizer:.2f}, obj: {self.obj_normalizer:.2f}, "
            f"cls: {self.cls_normalizer:.2f}) Region {self.index} Avg (IOU: {_cf(self.avg_iou)}), count: {max(self.count, 1)}, "
        )
        b = self.batch
        if not self.show_details:
            return head + f"total_loss = {_cf(self.loss / b)} "
        return head + f"class_loss = {_cf(self.class_loss / b)}, iou_loss = {_cf(self.iou_loss / b)}, total_loss = {_cf(self.loss / b)} "

    def stats_line(self) -> str:
        """Every counter, in the layout of AlexeyAB's longer (commented-out) line."""
        return (
            f"Region {self.index} Avg (IOU: {_cf(self.avg_iou)}, GIOU: {_cf(self.avg_giou)}), Class: {_cf(self.avg_cat)}, "
            f"Obj: {_cf(self.avg_obj)}, No Obj: {_cf(self.avg_anyobj)}, .5R: {_cf(self.recall50)}, .75R: {_cf(self.recall75)}, "
            f"count: {self.count}, class_loss = {_cf(self.class_loss / self.batch)}, iou_loss = {_cf(self.iou_loss / self.batch)}, "
            f"total_loss = {_cf(self.loss / self.batch)}"
        )


def _cf(v: float) -> str:
    """C's ``%f`` (glibc prints the NaN of 0/0 as -nan)."""
    if math.isnan(v):
        return "-nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:f}"


def valid_truths(truth: torch.Tensor, classes: int, max_boxes: int) -> tuple[torch.Tensor, int]:
    """Which truth rows darknet looks at: (B, M) mask, and the count of boxes skipped for their class.

    darknet reads at most ``max`` boxes per image and stops at the first with x = 0
    (``if(!truth.x) break``); a class outside 0..classes-1 is skipped with a warning (AlexeyAB).
    Padding rows (class -1) are not counted as skipped.
    """
    m = truth.shape[1]
    alive = torch.cumprod((truth[..., 1] != 0).to(torch.int32), dim=1).bool()
    alive &= (torch.arange(m, device=truth.device) < max_boxes)[None, :]
    cls = truth[..., 0].trunc()
    ok = (cls >= 0) & (cls < classes)
    skipped = int((alive & ~ok & (cls != -1)).sum())
    return alive & ok, skipped


def check_finite(kind: str, index: int, delta: torch.Tensor, sums: float, output: torch.Tensor,
                 truth: torch.Tensor, valid: torch.Tensor) -> None:
    """Stop on a non-finite IoU or delta, naming the layer and the likely cause (darknet prints IOU = -nan).

    ``sums`` is the IoU sum plus |delta|²: finite exactly when every term is (short of an overflow,
    itself a diverged run), so the full tensor is inspected only when something is wrong.
    """
    if math.isfinite(sums):
        return
    where = f"[{kind}] layer {index}: the IoU or the deltas are not finite (darknet would print 'IOU = -nan' and go on)"
    flat = ((truth[..., 3] <= 0) | (truth[..., 4] <= 0)) & valid
    if bool(flat.any()):
        b, t = (int(v) for v in torch.nonzero(flat)[0])
        row = " ".join(f"{float(v):g}" for v in truth[b, t])
        raise NonFiniteLoss(f"{where}: image {b} of the batch has a box of zero width or height ({row}); drop such boxes from the labels")
    if not bool(torch.isfinite(output).all()):
        raise NonFiniteLoss(
            f"{where}: the layer's output is already not finite, so training diverged; the learning rate is most likely "
            "too high for this network without a warm-up: set burn_in=1000 in [net] or lower learning_rate"
        )
    raise NonFiniteLoss(
        f"{where}: most likely a learning rate too high without burn_in (set burn_in=1000 in [net] or lower "
        "learning_rate), or boxes with zero width or height in the labels"
    )


def first_last(slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For items in processing order, whether each is the first / last one written to its slot."""
    k = slot.numel()
    ss, perm = torch.sort(slot, stable=True)
    first_s = torch.ones(k, dtype=torch.bool, device=slot.device)
    last_s = torch.ones(k, dtype=torch.bool, device=slot.device)
    if k > 1:
        first_s[1:] = ss[1:] != ss[:-1]
        last_s[:-1] = ss[:-1] != ss[1:]
    first = torch.empty_like(first_s)
    last = torch.empty_like(last_s)
    first[perm] = first_s
    last[perm] = last_s
    return first, last
