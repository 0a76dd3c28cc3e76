"""Darknet's programs (``classifier predict|valid``, ``detector test``, ``partial``, and ``convert``) printing
what darknet prints. The command line lives in :mod:`cnnlab.commands.darknet`; this is the logic behind it.

Each function takes keyword-only arguments and the output streams, so tests (and other code) call them
directly and a call reads like the command line.
stdout carries what darknet writes to stdout; the layer table and "Loading weights" go to stderr.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from cnnlab.darknet.cfg import label_of, read_data_file
from cnnlab.darknet.cfg import resolve_data_path as _resolve
from cnnlab.darknet.detect import Detections, network_boxes, nms_sort
from cnnlab.darknet.image_stream import SkipLog, engine_for, images_ahead, prompted, run_batch, stdin_paths
from cnnlab.darknet.layers import Yolo
from cnnlab.darknet.model import DarknetNet, load_darknet
from cnnlab.darknet.preprocess import preprocess
from cnnlab.darknet.textfiles import path_part_as_text as _shown
from cnnlab.darknet.textfiles import read_lines
from cnnlab.darknet.weights import WeightsHeader, save_weights
from cnnlab.engine.inference import InferenceOptions
from cnnlab.engine.prefetch import batched
from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_writer, file_in_the_way

f32 = np.float32
VALID_BATCH = 8  # classifier valid runs its list this many images at a time


def read_names(options: dict[str, str], data_file: Path, keys: tuple[str, ...]) -> list[str]:
    name_file = next((options[k] for k in keys if k in options), "data/labels.list")
    p = _resolve(name_file, data_file)
    try:
        return read_lines(p)
    except OSError:
        raise CnnlabError(f"{data_file}: cannot read the class names file {name_file!r} (from '{keys[0]}=')") from None


def _load(cfg: str, weights: str | None, flavor: str, allow_partial: bool, err: TextIO) -> DarknetNet:
    model = load_darknet(cfg, None, flavor)
    print(model.layer_table(), file=err)
    if weights:
        print(f"Loading weights from {weights}...", end="", file=err)
        model.load_weights(weights, allow_partial=allow_partial)
        print("Done!", file=err)
    return model.eval()


def _check_classes(options: dict[str, str], data_file: Path, model: DarknetNet, names: list[str]) -> None:
    if "classes" in options:
        classes = int(options["classes"]) if options["classes"].lstrip("-").isdecimal() else -1
        if classes != model.classes:
            raise CnnlabError(
                f"{data_file}: classes={options['classes']} but the network outputs {model.classes} classes; "
                f"set classes={model.classes} or use the matching cfg"
            )
    if len(names) < model.classes:
        raise CnnlabError(f"{data_file}: the names file has {len(names)} lines but the network has {model.classes} classes")


def _top_k(pred: np.ndarray, k: int) -> list[int]:
    """darknet ``top_k``: ties keep the lower index first (a stable descending sort)."""
    return [int(i) for i in np.argsort(-pred, kind="stable")[:k]]


def classifier_predict(
    *,
    data: str,
    cfg: str,
    weights: str,
    image: str | None = None,
    top: int = 0,
    flavor: str = "pjreddie",
    allow_partial: bool = False,
    options: InferenceOptions = InferenceOptions(),
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """darknet ``classifier predict``: ``image``, or each path read from stdin (decoded ahead of the
    network; an unreadable one is skipped and reported, the exit status is then 1)."""
    out, err = out or sys.stdout, err or sys.stderr  # resolved at call time (tests swap sys.stdout)
    data_file = Path(data)
    dopts = read_data_file(data_file)
    names = read_names(dopts, data_file, ("names", "labels"))
    model = _load(cfg, weights, flavor, allow_partial, err)
    if model.is_detector:
        raise CnnlabError(f"{cfg} is a detector ([yolo]/[region]); use `cnnlab darknet detector test`")
    _check_classes(dopts, data_file, model, names)
    if top == 0:
        top = int(dopts.get("top", "1") or 1)
    if flavor == "alexeyab":
        print(f" classes = {model.classes}, output in cfg = {model.layers[-1].in_shape[0]} ", file=out)
        top = min(top, model.classes)
    engine = engine_for(model, options, err, weights)
    stream = images_ahead([image] if image is not None else stdin_paths(),
                          lambda im: preprocess(im, model.width, model.height, flavor, "classify"))  # fmt: skip
    skips = SkipLog(err)
    for path, (_, x) in prompted(stream, image is not None, out, skips):
        t0 = time.perf_counter()
        pred = run_batch(engine, [x])
        assert isinstance(pred, torch.Tensor)
        p = pred[0].numpy()
        dt = time.perf_counter() - t0
        _print_top(p, top, names, path, dt, x.shape, flavor, out, err)
    return skips.close()


def _print_top(p: np.ndarray, top: int, names: list[str], path: str, dt: float, shape: tuple, flavor: str, out: TextIO, err: TextIO) -> None:
    idx = _top_k(p, top)
    if flavor == "pjreddie":
        print(f"{_shown(path)}: Predicted in {dt:f} seconds.", file=err)
        for i in idx:
            print("%5.2f%%: %s" % (f32(p[i]) * f32(100), names[i]), file=out)  # float product, as in C
    else:
        print(f"{shape[2]} {shape[1]}", file=out)  # AlexeyAB prints the crop's w h
        print(f"{_shown(path)}: Predicted in {dt * 1000:f} milli-seconds.", file=out)
        for i in idx:
            print("%s: %f" % (names[i], p[i]), file=out)


def classifier_valid(
    *,
    data: str,
    cfg: str,
    weights: str,
    flavor: str = "pjreddie",
    allow_partial: bool = False,
    options: InferenceOptions = InferenceOptions(batch=VALID_BATCH),
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """darknet ``classifier valid``, with predict's preprocessing and exact folder-name labels; the
    images are decoded ahead and run ``options.batch`` at a time; unreadable ones are skipped, counted
    and reported (they do not count in the accuracy)."""
    out, err = out or sys.stdout, err or sys.stderr  # resolved at call time (tests swap sys.stdout)
    data_file = Path(data)
    opts = read_data_file(data_file)
    labels = read_names(opts, data_file, ("labels", "names"))
    model = _load(cfg, weights, flavor, allow_partial, err)
    _check_classes(opts, data_file, model, labels)
    valid = _resolve(opts.get("valid", "data/train.list"), data_file)
    try:
        paths = read_lines(valid, paths=True)
    except OSError:
        raise CnnlabError(f"{data_file}: cannot read the validation list {str(valid)!r} (from 'valid=')") from None
    topk = int(opts.get("top", "1") or 1)
    engine = engine_for(model, options, err, weights)
    stream = images_ahead(paths, lambda im: preprocess(im, model.width, model.height, flavor, "classify"),
                          resolve=lambda p: _resolve(p, data_file))  # fmt: skip
    skips, score = SkipLog(err), _Accuracy(labels, topk, model.classes)
    for chunk in batched((got for got in stream if skips.ok(got)), max(1, options.batch)):
        pred = run_batch(engine, [got.value[1] for got in chunk])
        assert isinstance(pred, torch.Tensor)
        for got, p in zip(chunk, pred.numpy()):
            print(score.add(got.item, p), file=out)
    if score.unlabelled:
        print(f"warning: {score.unlabelled} of {score.n} images are in no folder named like a label; they count as wrong", file=err)
    return skips.close()


class _Accuracy:
    """darknet's running top-1 / top-k line, image by image."""

    def __init__(self, labels: list[str], topk: int, classes: int) -> None:
        self.labels, self.topk, self.classes = labels, topk, classes
        self.n = self.unlabelled = 0
        self.acc = self.acck = 0.0

    def add(self, path: str, p: np.ndarray) -> str:
        cls = label_of(path, self.labels)
        self.unlabelled += cls < 0
        idx = _top_k(p[: self.classes], self.topk)
        self.acc += idx[0] == cls
        self.acck += cls in idx
        self.n += 1
        i = self.n - 1
        return "%d: top 1: %f, top %d: %f" % (i, f32(self.acc) / f32(i + 1), self.topk, f32(self.acck) / f32(i + 1))


def _draw(pixels: np.ndarray, d: Detections, thresh: float, names: list[str], out_png: Path) -> None:
    """Draw boxes as darknet's draw_detections does (its colour recipe, a label per box), into a PNG.

    ``pixels`` is the image as loaded (float32 CHW, u8/255), so the file is not decoded a second time."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.rint(pixels.transpose(1, 2, 0) * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    width_px = max(1, int(im.height * 0.006))
    classes = d.probs.shape[1] if len(d) else 1
    colors = [[1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0]]

    def color(c: int, x: int, maxv: int) -> float:
        ratio = (x / maxv) * 5
        i, j = int(np.floor(ratio)), int(np.ceil(ratio))
        ratio -= i
        return (1 - ratio) * colors[i][c] + ratio * colors[j][c]

    for b, probs in zip(d.boxes, d.probs):
        hits = [j for j in range(classes) if probs[j] > thresh]
        if not hits:
            continue
        offset = hits[0] * 123457 % classes
        rgb = tuple(int(255 * color(c, offset, classes)) for c in (2, 1, 0))
        x, y, w, h = (float(v) for v in b)
        # darknet truncates to int and clamps each edge to the image
        left = min(max(0, int((x - w / 2) * im.width)), im.width - 1)
        right = min(max(0, int((x + w / 2) * im.width)), im.width - 1)
        top = min(max(0, int((y - h / 2) * im.height)), im.height - 1)
        bot = min(max(0, int((y + h / 2) * im.height)), im.height - 1)
        if right < left or bot < top:
            continue
        draw.rectangle([left, top, right, bot], outline=rgb, width=width_px)
        draw.text((left + 2, max(0, top - 12)), ", ".join(names[j] for j in hits), fill=rgb)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out_png) as f:
        im.save(f, format="PNG")


def _print_pjreddie(d: Detections, thresh: float, names: list[str], out: TextIO) -> None:
    for probs in d.probs:
        for j in np.nonzero(probs > f32(thresh))[0]:
            print("%s: %.0f%%" % (names[j], f32(probs[j]) * f32(100)), file=out)


def _c_round(v: float) -> float:
    """C ``round``: halves away from zero (Python's round() rounds halves to even)."""
    return float(np.sign(v) * np.floor(abs(v) + 0.5))


def _print_alexeyab(d: Detections, thresh: float, names: list[str], im_w: int, im_h: int, ext: bool, out: TextIO) -> None:
    for line in alexeyab_box_lines(d, thresh, names, im_w, im_h, ext):
        print(line, file=out)


def alexeyab_box_lines(d: Detections, thresh: float, names: list[str], im_w: int, im_h: int, ext: bool) -> list[str]:
    """AlexeyAB draw_detections_v3's lines: boxes sorted (stably) by left edge; per box its best class,
    then the others; with ``ext`` (-ext_output) the box in pixels."""
    sel = [i for i in range(len(d)) if (d.probs[i] > f32(thresh)).any()]
    lefts = d.boxes[:, 0] - d.boxes[:, 2] / f32(2)  # float32, as compare_by_lefts
    sel.sort(key=lambda i: lefts[i])
    lines = []
    for i in sel:
        probs = d.probs[i]
        best = int(np.argmax(np.where(probs > f32(thresh), probs, f32(-1))))  # first max, as get_actual_detections
        x, y, w, h = d.boxes[i]
        tail = ""
        if ext:
            left = _c_round(float((x - w / f32(2)) * f32(im_w)))
            top = _c_round(float((y - h / f32(2)) * f32(im_h)))
            tail = "\t(left_x: %4.0f   top_y: %4.0f   width: %4.0f   height: %4.0f)" % (
                left, top, _c_round(float(w * f32(im_w))), _c_round(float(h * f32(im_h))))
        for j in [best] + [j for j in range(len(probs)) if probs[j] > f32(thresh) and j != best]:
            lines.append("%s: %.0f%%%s" % (names[j], f32(probs[j]) * f32(100), tail))
    return lines


def detector_test(
    *,
    data: str,
    cfg: str,
    weights: str,
    image: str | None = None,
    thresh: float = 0.5,
    hier: float = 0.5,
    nms: float = 0.45,
    out_name: str = "predictions",
    flavor: str = "pjreddie",
    letter_box: bool = False,
    ext_output: bool = False,
    allow_partial: bool = False,
    options: InferenceOptions = InferenceOptions(),
    out: TextIO | None = None,
    err: TextIO | None = None,
    force: bool = False,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr  # resolved at call time (tests swap sys.stdout)
    # darknet overwrites predictions.png silently; an image from an earlier run is the user's now
    _refuse_overwrite(out_name + ".png", force, {"image": image, "cfg": cfg, "weights": weights, "data": data})
    data_file = Path(data)
    dopts = read_data_file(data_file)
    names = read_names(dopts, data_file, ("names",))
    model = _load(cfg, weights, flavor, allow_partial, err)
    if not model.is_detector:
        raise CnnlabError(f"{cfg} has no [yolo] or [region] layer; use `cnnlab darknet classifier predict`")
    _check_classes(dopts, data_file, model, names)
    letter = flavor == "pjreddie" or letter_box or bool(model.net_options.int("letter_box", 0))
    engine = engine_for(model, options, err, weights)
    stream = images_ahead([image] if image is not None else stdin_paths(),
                          lambda im: preprocess(im, model.width, model.height, flavor, "detect", letter_box=letter))  # fmt: skip
    skips = SkipLog(err)
    for path, (im, x) in prompted(stream, image is not None, out, skips):
        _, ih, iw = im.shape
        t0 = time.perf_counter()
        outs = run_batch(engine, [x])
        dt = time.perf_counter() - t0
        assert isinstance(outs, list)
        if flavor == "pjreddie":
            print(f"{_shown(path)}: Predicted in {dt:f} seconds.", file=out)
        else:
            for k in model.detection_layers:  # AlexeyAB's layer type ids: REGION 27, YOLO 28
                print(f" Detection layer: {k} - type = {28 if isinstance(model.layers[k], Yolo) else 27} ", file=out)
            print(f"{_shown(path)}: Predicted in {dt * 1000:f} milli-seconds.", file=out)
        d = network_boxes(model, outs, iw, ih, thresh, letter)
        last = model.layers[model.detection_layers[-1]]
        kind = last.nms_kind if isinstance(last, Yolo) else "default"
        if nms:
            d = nms_sort(d, nms, kind)
        if flavor == "pjreddie":
            _print_pjreddie(d, thresh, names, out)
        else:
            _print_alexeyab(d, thresh, names, iw, ih, ext_output, out)
        _draw(im, d, thresh, names, Path(out_name + ".png"))
    return skips.close()


def _refuse_overwrite(path: str | Path, force: bool, inputs: dict[str, str | None]) -> None:
    """An existing output needs --force; an output that is one of the command's inputs (same file, through
    any link) is refused even with it: writing it would replace what the command reads."""
    out = Path(path)
    if (blocker := file_in_the_way(out)) is not None:
        raise CnnlabError(f"cannot write {out}: {blocker} is a file, not a folder; choose another -out")
    if not out.exists():
        return
    for what, src in inputs.items():
        if src and Path(src).exists() and os.path.samefile(out, src):
            raise CnnlabError(f"{path} is the input {what} file; write the output to another file (even --force does not overwrite an input)")
    if not force:
        raise CnnlabError(f"{path} already exists; pass --force to overwrite it, or choose another output name")


def partial(
    *, cfg: str, weights: str, outfile: str, n: int, flavor: str = "pjreddie", force: bool = False, err: TextIO | None = None
) -> int:
    """darknet ``partial``: the first ``n`` layers' weights, ``seen`` reset, in the header darknet writes."""
    err = err or sys.stderr
    if n < 0:
        raise CnnlabError(f"partial: N must be >= 0, got {n}")
    _refuse_overwrite(outfile, force, {"weights": weights, "cfg": cfg})
    model = _load(cfg, weights, flavor, allow_partial=False, err=err)
    print(f"Saving weights to {outfile}", file=err)
    # pjreddie writes version 0.2.0, AlexeyAB 0.2.5; both with a 64-bit seen, connected not transposed
    header = WeightsHeader(0, 2, 0 if flavor == "pjreddie" else 5, 0, 8)
    save_weights(model, outfile, upto=n, header=header)
    return 0


def convert(
    *,
    cfg: str,
    weights: str,
    outfile: str,
    data: str | None = None,
    names_file: str | None = None,
    flavor: str = "pjreddie",
    allow_partial: bool = False,
    force: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``cfg`` + ``weights`` → a cnnlab checkpoint (cfg text inside) for ``cnnlab train/valid/predict``."""
    from cnnlab.darknet.classifier import classifier_from_net
    from cnnlab.engine import checkpoint as ckpt_mod

    out, err = out or sys.stdout, err or sys.stderr
    if data and names_file:
        raise CnnlabError("give the class names once: --data FILE (its names=) or --names FILE, not both")
    _refuse_overwrite(outfile, force, {"weights": weights, "cfg": cfg, "data": data, "names": names_file})
    net = load_darknet(cfg, weights, flavor, allow_partial)
    model = classifier_from_net(net)  # refuses detectors with a one-line error
    if data:
        data_file = Path(data)
        options = read_data_file(data_file)
        names = read_names(options, data_file, ("names", "labels"))
        _check_classes(options, data_file, net, names)
        where = f"{data_file} (names=)"
    elif names_file:
        try:
            names = read_lines(names_file)
        except OSError as e:
            raise CnnlabError(f"cannot read the names file {names_file!r}: {e.strerror}") from None
        where = names_file
    else:
        names = [str(i) for i in range(model.num_classes)]
        where = ""
    if where and len(names) != model.num_classes:
        raise CnnlabError(f"{where} lists {len(names)} class names but {cfg} outputs {model.num_classes}; give a names file with one line per output")
    pre = model.meta.preprocess
    ckpt = {
        "format": ckpt_mod.FORMAT,
        "arch": ckpt_mod.arch_of(model),
        "classes": names,
        "preprocess": pre.to_dict(),
        "model": model.state_dict(),
        "ema": None,
        "darknet": {"cfg": str(cfg), "weights": str(weights), "flavor": flavor, "header": net.header.to_dict()},
    }
    ckpt_mod.save_atomic(ckpt, Path(outfile))
    c, h, w = pre.input_size
    print(
        f"{outfile}: {cfg} + {weights} as a cnnlab checkpoint ({model.num_classes} classes"
        f"{'' if where else ', named 0..' + str(model.num_classes - 1) + ' (pass --data or --names)'}; "
        f"{flavor} preprocessing: {pre.resize_mode} to {w}x{h}, x/255)",
        file=out,
    )
    return 0
