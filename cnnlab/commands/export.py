"""``cnnlab export SOURCE --format onnx|openvino|torchscript``: a trained model as a file other runtimes
load, BatchNorm folded, dynamic batch, preprocessing and class names inside; then checked against the
PyTorch model on real images (the largest absolute difference is printed). See :mod:`cnnlab.export`."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.fileio import file_in_the_way

NAME = "export"
MAX_BATCH_BYTES = 2**30  # one float32 batch of inputs; the activations of the traced forward come on top

HELP = "export a trained model to ONNX, OpenVINO or TorchScript (preprocessing inside) and check it against PyTorch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="RUN_DIR|CKPT|darknet:CFG", help="a run folder, a cnnlab checkpoint, or darknet:CFG with --weights")
    p.add_argument("--format", required=True, help="onnx | openvino | torchscript")
    p.add_argument("--weights", help="the .weights file of darknet:CFG")
    p.add_argument("--data", help="darknet .data file whose names= gives the class names")
    p.add_argument("--flavor", choices=("pjreddie", "alexeyab"), help="darknet flavor of darknet:CFG (default: pjreddie)")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 (bf16: OpenVINO only)")
    p.add_argument("--input", default="float32", help="float32 (normalised input) | uint8 (NCHW pixels, normalised in the graph)")
    p.add_argument("--out", help="output file (default: beside the checkpoint or .weights, e.g. best.onnx, best-uint8-bf16.xml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights even if the run kept an EMA")
    p.add_argument("--static-batch", type=int, metavar="N",
                   help="fix the batch dimension at N (e.g. 1) instead of leaving it dynamic (onnx, openvino)")  # fmt: skip
    p.add_argument("--check-images", type=int, default=32, metavar="N", help="real images for the parity check (default: 32; 0 skips it)")


def _out_path(args: argparse.Namespace, stem: Path, inputs: tuple[Path, ...]) -> Path:
    from cnnlab.export.exporter import default_path, written_files

    default = default_path(stem, args.format, args.precision, args.input == "uint8", args.static_batch)
    if args.out and Path(args.out).is_dir():
        raise CnnlabError(f"--out {args.out} is a folder; name the file to write in it, e.g. {Path(args.out) / default.name}")
    out = Path(args.out) if args.out else default
    if args.out and args.format == "openvino" and out.suffix != ".xml":
        raise CnnlabError(f"--out {out}: an OpenVINO model is an .xml file (with its .bin beside it); name it {out.with_suffix('.xml')}")
    if args.out and args.format != "openvino" and out.suffix in (".xml", ".bin"):
        raise CnnlabError(f"--out {out}: an {out.suffix} name is OpenVINO's; name the {args.format} file e.g. {out.with_suffix('.onnx' if args.format == 'onnx' else '.pt')}")
    if args.out and args.format == "onnx" and out.suffix != ".onnx":
        raise CnnlabError(f"--out {out}: name the ONNX file {out.with_suffix('.onnx')} (runtimes and readers go by the suffix)")
    if args.out and args.format == "torchscript" and out.suffix == ".onnx":
        raise CnnlabError(f"--out {out}: an .onnx name is ONNX's; name the TorchScript file e.g. {out.with_suffix('.ts')}")
    if (blocker := file_in_the_way(out)) is not None:
        raise CnnlabError(f"--out {out}: {blocker} is a file, not a folder; choose another --out")
    if not args.out and not os.access(out.parent, os.W_OK):
        raise CnnlabError(f"cannot write beside the source in {out.parent}; pass --out PATH in a folder you can write")
    for f in written_files(out, args.format):
        if f.is_dir():
            raise CnnlabError(f"{f} is a folder; choose another --out")
        if any(i.exists() and f.exists() and os.path.samefile(f, i) for i in inputs):
            raise CnnlabError(f"{f} is one of the export's inputs; choose another --out (even --force does not overwrite an input)")
        if f.exists() and not args.force:
            raise CnnlabError(f"{f} already exists; pass --force to overwrite it, or choose another --out")
    return out


def run(args: argparse.Namespace) -> int:
    from cnnlab.export.exporter import check_installed, check_request

    if args.check_images < 0:
        raise CnnlabError(f"--check-images {args.check_images}: give a number of images, or 0 to skip the parity check")
    if args.static_batch is not None and args.static_batch < 1:
        raise CnnlabError(f"--static-batch {args.static_batch}: give the batch size to fix, 1 or more")
    if args.static_batch is not None and args.format == "torchscript":
        raise CnnlabError("--static-batch fixes an ONNX or OpenVINO graph's batch; a TorchScript module takes any batch (drop it)")
    if args.input not in ("float32", "uint8"):
        raise CnnlabError(f"unknown --input {args.input!r}; use float32 or uint8")
    check_request(args.format, args.precision)
    check_installed(args.format)

    from cnnlab.export import parity
    from cnnlab.export.exporter import BACKENDS, export_model, parity_runner
    from cnnlab.export.source import load_source

    src = load_source(args.source, weights=args.weights, data=args.data, flavor=args.flavor, use_ema=not args.no_ema)
    _check_batch_fits(args.static_batch, src.pre.input_size)
    out = _out_path(args, src.stem, src.inputs)
    path, prep = export_model(
        src.model, src.pre, args.format, out, classes=src.classes, input_uint8=args.input == "uint8",
        precision=args.precision, static_batch=args.static_batch, extra_metadata=src.extra_metadata,
    )  # fmt: skip
    meta = prep.metadata
    c, h, w = src.pre.input_size
    batch = str(args.static_batch or "N")
    print(f"exported {meta['model']} to {path} ({args.format}, {args.precision}; input images {meta['input_dtype']} "
          f"[{batch}, {c}, {h}, {w}]; outputs {', '.join(prep.output_names)}; BatchNorm folded into {meta['batchnorm_folded']} layers)")  # fmt: skip
    if args.check_images > 0:
        import torch

        runner = parity_runner(path, args.format, args.precision, torch.get_num_threads())  # as many threads as torch
        backend = BACKENDS[args.format] + (f" {runner_precision(args)}" if args.format == "openvino" else "")
        print(parity.check(src.model, src.pre, runner, args.check_images).line(backend))
    return 0


def _check_batch_fits(static_batch: int | None, input_size: tuple[int, ...]) -> None:
    """The export traces (and the parity check runs) one whole batch: refuse one that cannot fit."""
    image_bytes = 4 * math.prod(input_size)
    if static_batch and static_batch * image_bytes > MAX_BATCH_BYTES:
        raise CnnlabError(f"--static-batch {static_batch}: one batch of {'x'.join(map(str, input_size))} inputs is "
                          f"{static_batch * image_bytes / 2**30:.1f} GiB to trace and check; give the batch the deployment "
                          f"runs (at most {MAX_BATCH_BYTES // image_bytes} here)")  # fmt: skip


def runner_precision(args: argparse.Namespace) -> str:
    return "bf16" if args.precision == "bf16" else "f32"
