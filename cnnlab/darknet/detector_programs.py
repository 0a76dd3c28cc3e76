"""AlexeyAB darknet's ``detector map``, ``detector valid`` and ``detector calc_anchors`` (detector.c),
printing what darknet prints. The command line lives in :mod:`cnnlab.commands.darknet`.

Labels are found as AlexeyAB finds them and read as its ``read_boxes`` reads them
(:func:`cnnlab.data.sources.yolo_labels.label_path`, :func:`~cnnlab.data.sources.yolo_labels.darknet_records`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from cnnlab.darknet.anchors import cfg_with_anchors, kmeans_anchors
from cnnlab.darknet.cfg import read_data_file
from cnnlab.darknet.cfg import resolve_data_path as _resolve
from cnnlab.darknet.detect import Detections, network_boxes, nms_sort
from cnnlab.darknet.layers import Yolo
from cnnlab.darknet.map import MapAccumulator, MapResult, gather
from cnnlab.darknet.model import DarknetNet
from cnnlab.darknet.preprocess import load_image, preprocess
from cnnlab.darknet.programs import _load, read_names, _refuse_overwrite
from cnnlab.darknet.textfiles import read_lines, read_text
from cnnlab.data.sources.yolo_labels import darknet_records, label_path
from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_writer

f32 = np.float32

# detector.c coco_ids: category ids of the 80 COCO classes
_COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
             35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
             64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]  # fmt: skip


@dataclass
class LabelReport:
    """Label files that were missing, unparsable, or held a class outside the network's classes."""

    missing: list[str] = field(default_factory=list)
    garbled: list[str] = field(default_factory=list)
    bad_class: list[str] = field(default_factory=list)
    bad_images: list[str] = field(default_factory=list)

    def print(self, err: TextIO, classes: int) -> None:
        def first(xs: list[str]) -> str:
            return ", ".join(xs[:3]) + (", ..." if len(xs) > 3 else "")

        if self.missing:
            print(f"warning: {len(self.missing)} images have no label file (AlexeyAB's rule: NAME.txt beside the image, "
                  f"or in labels/ for a JPEGImages/ or COCO images/ path); counted as images without objects: {first(self.missing)}", file=err)  # fmt: skip
        if self.garbled:
            print(f"warning: {len(self.garbled)} label files stop parsing before their end (lines must be 'class x y w h'); "
                  f"the boxes before that point were used, as darknet does: {first(self.garbled)}", file=err)  # fmt: skip
        if self.bad_class:
            print(f"warning: {len(self.bad_class)} label files have class ids outside 0..{classes - 1}; those boxes were skipped: "
                  f"{first(self.bad_class)}", file=err)  # fmt: skip
        if self.bad_images:
            print(f"warning: {len(self.bad_images)} images could not be read and were skipped: {first(self.bad_images)}", file=err)


def _forward(model: DarknetNet, x: np.ndarray) -> torch.Tensor | list[torch.Tensor]:
    """The eager network on one preprocessed image: map/valid/calc_anchors keep darknet's exact float
    path (their printouts are compared to darknet's digit for digit), not the inference engine's folding."""
    with torch.inference_mode():
        param = next(model.parameters(), None)
        return model(torch.from_numpy(x)[None].to(param.device if param is not None else "cpu"))


def truths(label: str, classes: int | None, report: LabelReport, out: TextIO) -> np.ndarray:
    """The (N, 5) boxes of a label file; darknet's "Can't open label file" line when there is none (no
    boxes then). With ``classes``, boxes whose id is outside 0..classes-1 are dropped and reported."""
    try:
        data = Path(label).read_bytes()
    except OSError:
        print(f"Can't open label file. (This can be normal only if you use MSCOCO): {label} ", file=out)
        report.missing.append(label)
        return np.zeros((0, 5), f32)
    boxes, whole = darknet_records(data)
    if not whole:
        report.garbled.append(label)
    if classes is not None:
        ok = (boxes[:, 0] >= 0) & (boxes[:, 0] < classes)
        if not ok.all():
            report.bad_class.append(label)
            boxes = boxes[ok]
    return boxes


def _image_list(options: dict[str, str], data_file: Path, key: str, default: str) -> list[str]:
    src = _resolve(options.get(key, default), data_file)
    try:
        return read_lines(src, paths=True)
    except OSError:
        raise CnnlabError(f"{data_file}: cannot read the image list {str(src)!r} (from '{key}=')") from None


def _detection_head(model: DarknetNet, out: TextIO) -> str:
    """Prints darknet's detection-layer lines; returns the NMS kind of the last head."""
    for k in model.detection_layers:  # AlexeyAB's layer type ids: REGION 27, YOLO 28
        print(f" Detection layer: {k} - type = {28 if isinstance(model.layers[k], Yolo) else 27} ", file=out)
    last = model.layers[model.detection_layers[-1]]
    return last.nms_kind if isinstance(last, Yolo) else "default"


def _detect(model: DarknetNet, path: Path, thresh: float, nms: float, kind: str, letter: bool) -> tuple[Detections, int, int]:
    """One image through the network as darknet's map/valid load it: boxes relative to the image, after NMS."""
    im = load_image(path)
    _, ih, iw = im.shape
    outs = _forward(model, preprocess(im, model.width, model.height, "alexeyab", "detect", letter_box=letter))
    assert isinstance(outs, list)
    d = network_boxes(model, outs, iw, ih, thresh, letter)
    return nms_sort(d, nms, kind), iw, ih


def _load_detector(cfg: str, weights: str, allow_partial: bool, err: TextIO) -> DarknetNet:
    model = _load(cfg, weights, "alexeyab", allow_partial, err)
    if not model.is_detector:
        raise CnnlabError(f"{cfg} has no [yolo] or [region] layer; `detector map/valid` need a detector cfg")
    return model


def _progress(i: int, m: int, err: TextIO, fmt: str) -> None:
    """darknet loads 4 images at a time and prints the running count before each group."""
    step = min(4, m)
    if step and i % step == 0:
        print(fmt % (i + step), end="", file=err, flush=True)


def _label(image_path: str, data_file: Path) -> str:
    """The label file of a listed image, found as the image is (the working folder first, as darknet)."""
    return str(_resolve(label_path(image_path, "alexeyab"), data_file))


def accumulate_map(
    model: DarknetNet, data: str, acc: MapAccumulator, *, kind: str, out: TextIO, err: TextIO, letter: bool | None = None,
    rank: int = 0, world: int = 1,
) -> LabelReport:
    """Runs the ``valid=`` images (``train=`` when there is none) of ``data`` through ``model`` into ``acc``,
    with darknet's thresh .005 and NMS .45; ``difficult=`` lists images whose labels are difficult truths.
    With ``world`` > 1 only the images i with i % world == rank (each added with its index i, so that
    :func:`cnnlab.darknet.map.gather` of all ranks gives the whole set's figures)."""
    data_file = Path(data)
    options = read_data_file(data_file)
    paths = _image_list(options, data_file, "valid" if "valid" in options else "train", "data/train.txt")
    hard_paths = _image_list(options, data_file, "difficult", "") if "difficult" in options else None
    if hard_paths is not None and len(hard_paths) < len(paths):
        raise CnnlabError(f"{data_file}: difficult= lists {len(hard_paths)} images but valid= lists {len(paths)}; they must be parallel lists")
    if letter is None:
        letter = bool(model.net_options.int("letter_box", 0))  # darknet's map: the cfg decides, not -letter_box
    report = LabelReport()
    for i, path in enumerate(paths):
        _progress(i, len(paths), err, "\r%d")
        if i % world != rank:
            continue
        try:
            d, _, _ = _detect(model, _resolve(path, data_file), 0.005, 0.45, kind, letter)
        except CnnlabError:
            report.bad_images.append(path)
            continue
        truth = truths(_label(path, data_file), acc.classes, report, out)
        hard = truths(_label(hard_paths[i], data_file), acc.classes, report, out) if hard_paths else np.zeros((0, 5), f32)
        flags = np.r_[np.zeros(len(truth), bool), np.ones(len(hard), bool)]
        acc.add(d, np.concatenate([truth, hard]), flags, index=i)
    return report


def _check_names(names: list[str], name_file: str, model: DarknetNet, cfg: str) -> None:
    if len(names) != model.classes:
        raise CnnlabError(f"{name_file} has {len(names)} names but {cfg} has classes={model.classes}; "
                          "give one name per class (darknet stops here too)")  # fmt: skip


def detector_map(
    *,
    data: str,
    cfg: str,
    weights: str,
    points: int = 0,
    iou_thresh: float = 0.5,
    thresh: float = 0.25,
    letter_box: bool = False,
    allow_partial: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> MapResult:
    """AlexeyAB ``detector map``: prints darknet's report, returns the figures."""
    out, err = out or sys.stdout, err or sys.stderr
    data_file = Path(data)
    options = read_data_file(data_file)
    names = read_names(options, data_file, ("names",))
    MapAccumulator(1, iou_thresh, thresh, points)  # a bad -points fails before the network loads
    model = _load_detector(cfg, weights, allow_partial, err)
    _check_names(names, options.get("names", "data/names.list"), model, cfg)
    if letter_box and not model.net_options.int("letter_box", 0):
        print("note: darknet's detector map ignores -letter_box (it letterboxes only with [net] letter_box=1); so does cnnlab", file=err)
    acc = MapAccumulator(model.classes, iou_thresh, thresh, points)
    print("\n calculation mAP (mean average precision)...", file=out)
    kind = _detection_head(model, out)
    t0 = time.time()
    report = accumulate_map(model, data, acc, kind=kind, out=out, err=err)
    r = acc.compute()
    print(f"\n detections_count = {r.detections_count}, unique_truth_count = {r.unique_truth_count}  ", file=out)
    for rank in range(0, r.detections_count, 100):
        print(f" rank = {rank} of ranks = {r.detections_count} \r", end="", file=out)
    print(r.lines(names), end="", file=out)
    print(f"Total Detection Time: {int(time.time() - t0)} Seconds", file=err)
    print("\nSet -points flag:\n `-points 101` for MS COCO \n `-points 11` for PascalVOC 2007 (uncomment `difficult` in voc.data) \n"
          " `-points 0` (AUC) for ImageNet, PascalVOC 2010-2012, your custom dataset", file=out)  # fmt: skip
    report.print(err, model.classes)
    return r


def _basecfg(path: str) -> str:
    """utils.c basecfg: the file name up to its first dot."""
    name = path.rsplit("/", 1)[-1] if "/" in path else path.rsplit("\\", 1)[-1]
    return name.split(".", 1)[0]


def _atoi(s: str) -> int:
    s = s.lstrip(" \t\n\r\f\v")
    n = len(s) - len(s.lstrip("+-"))
    digits = s[min(n, 1) :]
    k = len(digits) - len(digits.lstrip("0123456789"))
    return int(s[: min(n, 1)] + digits[:k]) if k else 0


def _voc_lines(image_id: str, d: Detections, iw: int, ih: int) -> list[list[str]]:
    """print_detector_detections: pixel corners +1, clamped to 1..w/h, one line per class with prob ≠ 0."""
    per_class: list[list[str]] = [[] for _ in range(d.probs.shape[1])]
    for (x, y, w, h), probs in zip(d.boxes * np.array([iw, ih, iw, ih], f32), d.probs):
        xmin = max(f32(float(x) - float(w) / 2.0 + 1), f32(1))  # double arithmetic, stored as float
        xmax = min(f32(float(x) + float(w) / 2.0 + 1), f32(iw))
        ymin = max(f32(float(y) - float(h) / 2.0 + 1), f32(1))
        ymax = min(f32(float(y) + float(h) / 2.0 + 1), f32(ih))
        for j in np.nonzero(probs)[0]:
            per_class[j].append("%s %f %f %f %f %f\n" % (image_id, probs[j], xmin, ymin, xmax, ymax))
    return per_class


def _coco_lines(image_id: int, d: Detections, iw: int, ih: int, classes: int) -> list[str]:
    """print_cocos: pixel x, y, w, h clamped to the image; COCO category ids."""
    lines = []
    for (x, y, w, h), probs in zip(d.boxes * np.array([iw, ih, iw, ih], f32), d.probs):
        xmin = max(f32(float(x) - float(w) / 2.0), f32(0))
        xmax = min(f32(float(x) + float(w) / 2.0), f32(iw))
        ymin = max(f32(float(y) - float(h) / 2.0), f32(0))
        ymax = min(f32(float(y) + float(h) / 2.0), f32(ih))
        for j in range(classes):
            if probs[j] > 0:
                lines.append('{"image_id":%d, "category_id":%d, "bbox":[%f, %f, %f, %f], "score":%f},\n'
                             % (image_id, _COCO_IDS[j], xmin, ymin, xmax - xmin, ymax - ymin, probs[j]))  # fmt: skip
    return lines


def _write_text(path: Path, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text.encode("utf-8"))


def detector_valid(
    *,
    data: str,
    cfg: str,
    weights: str,
    outfile: str | None = None,
    allow_partial: bool = False,
    force: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """AlexeyAB ``detector valid``: detections of the ``valid=`` images (thresh .001, NMS .6) into
    ``results/<outfile><class>.txt`` (eval=voc, the default) or ``results/<outfile>.json`` (eval=coco)."""
    out, err = out or sys.stdout, err or sys.stderr
    data_file = Path(data)
    options = read_data_file(data_file)
    names = read_names(options, data_file, ("names",))
    prefix = Path(options.get("results", "results"))
    kind_of_eval = options.get("eval", "voc")
    if kind_of_eval not in ("voc", "coco") and kind_of_eval in ("bdd", "kitti", "imagenet"):
        raise CnnlabError(f"{data_file}: eval={kind_of_eval} is not supported by cnnlab; use eval=voc (the default) or eval=coco")
    coco = kind_of_eval == "coco"
    model = _load_detector(cfg, weights, allow_partial, err)
    if len(names) < model.classes:
        raise CnnlabError(f"{data_file}: the names file has {len(names)} lines but the network has {model.classes} classes")
    if coco and model.classes > len(_COCO_IDS):
        raise CnnlabError(f"eval=coco maps 80 classes to COCO ids; {cfg} has {model.classes}")
    targets = [prefix / f"{outfile or 'coco_results'}.json"] if coco else [prefix / f"{outfile or 'comp4_det_test_'}{n}.txt" for n in names[: model.classes]]
    for t in targets:
        _refuse_overwrite(t, force, {"data": data, "cfg": cfg, "weights": weights})
    paths = _image_list(options, data_file, "valid", "data/train.list")
    kind = _detection_head(model, out)
    letter = bool(model.net_options.int("letter_box", 0))
    per_class: list[list[str]] = [[] for _ in range(model.classes)]
    coco_lines: list[str] = []
    bad: list[str] = []
    t0 = time.time()
    for i, path in enumerate(paths):
        _progress(i, len(paths), err, "%d\n")
        try:
            d, iw, ih = _detect(model, _resolve(path, data_file), 0.001, 0.6, kind, letter)
        except CnnlabError:
            bad.append(path)
            continue
        if coco:
            coco_lines += _coco_lines(_atoi(_basecfg(path)), d, iw, ih, model.classes)
        else:
            for j, lines in enumerate(_voc_lines(_basecfg(path), d, iw, ih)):
                per_class[j] += lines
    if coco:  # darknet seeks back over the last ",\n"; with no detections we still write valid JSON
        body = "".join(coco_lines)
        _write_text(targets[0], "[\n" + (body[:-2] + "\n" if body else "") + "]\n")
    else:
        for t, lines in zip(targets, per_class):
            _write_text(t, "".join(lines))
    print(f"Total Detection Time: {float(int(time.time() - t0)):f} Seconds", file=err)
    if bad:
        print(f"warning: {len(bad)} images could not be read and were skipped: {', '.join(bad[:3])}", file=err)
    return 0


def _anchor_boxes(
    paths: list[str], data_file: Path, classes: int, width: int, height: int, out: TextIO
) -> tuple[np.ndarray, list[int], LabelReport]:
    """The label boxes' (w·width, h·height) in float32, and the boxes per class (grown for larger ids, as darknet)."""
    report = LabelReport()
    sizes: list[np.ndarray] = []
    counts = [0] * classes
    last = (0, 0)
    for i, path in enumerate(paths):
        label = _label(path, data_file)
        truth = truths(label, None, report, out)
        for j, (c, x, y, w, h) in enumerate(truth):
            if not (0 < x <= 1 and 0 < y <= 1 and 0 < w <= 1 and 0 < h <= 1):
                print(f"\n\nWrong label: {label} - j = {j}, x = {x:f}, y = {y:f}, width = {w:f}, height = {h:f} ", file=out)
            if c < 0:
                report.bad_class.append(label)
                continue
            counts += [0] * (int(c) + 1 - len(counts))
            counts[int(c)] += 1
        truth = truth[truth[:, 0] >= 0]
        sizes.append(np.stack([truth[:, 3] * f32(width), truth[:, 4] * f32(height)], 1).astype(f32))
        if len(truth):
            last = (i + 1, last[1] + len(truth))
    if last[1]:
        print(f"\r loaded \t image: {last[0]} \t box: {last[1]}", end="", file=out)
    boxes = np.concatenate(sizes) if sizes else np.zeros((0, 2), f32)
    return boxes, counts, report


def calc_anchors(
    *,
    data: str,
    num_of_clusters: int = 5,
    width: int = -1,
    height: int = -1,
    show: bool = False,
    seed: int = 0,
    write_cfg: str | None = None,
    cfg_out: str | None = None,
    out_dir: str = ".",
    force: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """AlexeyAB ``detector calc_anchors``, seeded: anchors.txt and counters_per_class.txt in ``out_dir``
    (darknet: the working folder) as darknet writes them; with ``write_cfg`` a copy of that cfg with the
    anchors in it (``cfg_out``, by default beside it as NAME-anchors.cfg)."""
    out, err = out or sys.stdout, err or sys.stderr
    print(f"\n num_of_clusters = {num_of_clusters}, width = {width}, height = {height} ", file=out)
    if width < 0 or height < 0:
        raise CnnlabError("set the network input size: -width W -height H (e.g. -width 416 -height 416)")
    where = Path(out_dir)
    targets = [where / "anchors.txt", where / "counters_per_class.txt"] + ([where / "anchors.png"] if show else [])
    cfg_target = Path(cfg_out) if cfg_out else (Path(write_cfg).with_name(Path(write_cfg).stem + "-anchors.cfg") if write_cfg else None)
    for t in targets + ([cfg_target] if cfg_target else []):
        _refuse_overwrite(t, force, {"data": data, "cfg": write_cfg})
    data_file = Path(data)
    options = read_data_file(data_file)
    paths = _image_list(options, data_file, "train", "data/train.list")
    classes = int(options.get("classes", "1") or 1)
    print(f" read labels from {len(paths)} images ", file=out)
    boxes, counts, report = _anchor_boxes(paths, data_file, classes, width, height, out)
    print("\n all loaded. ", file=out)
    print("\n calculating k-means++ ...", file=out)
    r = kmeans_anchors(boxes, num_of_clusters, seed)
    print(f"\n iterations = {r.iterations} \n", file=out)
    counters = ", ".join(str(c) for c in counts)
    print(f"\ncounters_per_class = {counters}", file=out)
    print("\n avg IoU = %2.2f %% " % r.avg_iou, file=out)
    line = r.text(width)
    print("\nSaving anchors to the file: anchors.txt \nanchors = " + line, file=out)
    _write_text(targets[1], f"counters_per_class = {counters}")
    _write_text(targets[0], line)
    if show:
        _draw_anchors(boxes, r.anchors, width, height, targets[2])
        print(f"{targets[2]}: the boxes and the anchors (darknet shows them in a window)", file=err)
    if write_cfg and cfg_target:
        try:
            text = read_text(write_cfg)
        except OSError as e:
            raise CnnlabError(f"cannot read cfg {write_cfg!r}: {e.strerror}") from None
        _write_text(cfg_target, cfg_with_anchors(text, line, num_of_clusters, write_cfg))
        print(f"{cfg_target}: {write_cfg} with anchors = {line}", file=err)
    report.print(err, max(classes, len(counts)))
    return 0


def _draw_anchors(boxes: np.ndarray, anchors: np.ndarray, width: int, height: int, path: Path) -> None:
    """A picture like darknet's show_anchors: each box's (w, h) as a dot, the anchors as rectangles."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (max(width, 1), max(height, 1)))
    draw = ImageDraw.Draw(im)
    for w, h in boxes:
        draw.point((int(w), int(h)), fill=(0, 200, 255))
    for w, h in anchors:
        draw.rectangle([0, 0, int(w), int(h)], outline=(255, 255, 255))
    with atomic_writer(path) as f:
        im.save(f, format="PNG")


def map_of(
    model: DarknetNet, data: str, *, iou_thresh: float = 0.5, thresh: float = 0.25, points: int = 0, rank: int = 0, world: int = 1
) -> MapResult:
    """darknet's mAP of an in-memory network on a .data file's valid= images, without printing (for -map
    during training). The network must be in eval mode. Under DDP every rank calls it with its rank and
    the world size: each measures its share and all get the whole set's figures (an all_gather)."""
    import io

    acc = MapAccumulator(model.classes, iou_thresh, thresh, points)
    with torch.no_grad():
        accumulate_map(model, data, acc, kind=_detection_head(model, io.StringIO()), out=io.StringIO(), err=io.StringIO(),
                       rank=rank, world=world)  # fmt: skip
    return (gather(acc) if world > 1 else acc).compute()
