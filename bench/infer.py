"""Inference speed of cnnlab's engine beside eager PyTorch, onnxruntime and OpenVINO, in one run.

Claim (issue 15, acceptance 3): on ResNet-18 at 224 and darknet.cfg (256), batch 1 and 32, 1 and 2
threads, the engine behind cnnlab's predicting commands (:mod:`cnnlab.engine.inference`) runs
  * fp32 (the default) at least 1.7x eager fp32, and at least as fast as onnxruntime and OpenVINO f32;
  * bf16 at least 3x eager fp32, and at least as fast as OpenVINO bf16.
Evidence: ms per image of each variant on the same random input, measured in paired rounds in this
one process (every round runs every variant for about ``--seconds``; the order flips every round, so
machine load hits them alike); the median of the rounds, and its ratio to eager fp32 in the same run.

    PYTHONPATH=. python bench/infer.py [--rounds 3] [--seconds 1.5] [--threads 1 2] [--batches 1 32] [--compile]

Variants: ``eager fp32`` is what the commands ran before the engine (``model.eval()``, NCHW,
``no_grad``; darknet nets folding BatchNorm on every forward); ``cnnlab fp32`` / ``cnnlab bf16``
is :func:`~cnnlab.engine.inference.prepare` with the default options / ``precision="bf16"``;
``--compile`` adds both with ``torch.compile`` on top. onnxruntime and OpenVINO run the model
exported once per batch size with ``torch.onnx.export(dynamo=True)`` (into a temporary folder);
OpenVINO f32 pins ``INFERENCE_PRECISION_HINT=f32`` (it picks bf16 by itself on a CPU that has it),
OpenVINO bf16 sets ``bf16``; both with the LATENCY hint and ``INFERENCE_NUM_THREADS``.
Weights do not change the speed, so the nets have their initial values (BatchNorm statistics
randomised so folding is not a no-op). The engine's per-layer choice between the packed and the
Winograd convolution is timed on a machine's first run and read back later
(``cnnlab/engine/kernel_cache.py``): delete ``~/.cache/cnnlab/conv-kernels.json`` to time afresh.
This process imports torch itself, so its OpenMP threads wait libgomp's way (spinning); cnnlab's
commands set sleeping threads before torch loads (``cnnlab/threads.py``), which costs the two-thread
batch-1 cells time per layer (darknet.cfg: 7.4 against 5.3 ms a forward on the Xeon of stop 26).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.engine.inference import InferenceOptions, prepare
from cnnlab.export.signal_stack import keep_signal_stack

ROOT = Path(__file__).resolve().parents[1]
Runner = Callable[[], object]


def build_net(name: str) -> nn.Module:
    if name == "resnet18":
        from cnnlab.models import create_model

        net = create_model("resnet18", num_classes=1000)
    else:
        from cnnlab.darknet import load_darknet

        net = load_darknet(ROOT / "tests" / "darknet" / "reference" / "cfg" / "darknet.cfg")
    g = torch.Generator().manual_seed(0)
    for m in net.modules():  # non-trivial BN statistics, as a trained net has
        if hasattr(m, "running_var") and m.running_var is not None:
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
    return net.eval()


def input_shape(name: str) -> tuple[int, int, int]:
    return (3, 224, 224) if name == "resnet18" else (3, 256, 256)


def onnx_file(net: nn.Module, x: torch.Tensor, folder: Path, tag: str) -> Path:
    out = folder / f"{tag}-b{x.shape[0]}.onnx"
    if not out.is_file():
        with torch.no_grad(), _quiet():
            torch.onnx.export(net, (x,), str(out), dynamo=True, external_data=False)
    return out


class _quiet:
    """The exporter prints progress on stdout; keep the bench's table readable."""

    def __enter__(self) -> None:
        self.old, sys.stdout = sys.stdout, io.StringIO()

    def __exit__(self, *exc: object) -> None:
        sys.stdout = self.old


def ort_runner(path: Path, x: np.ndarray, threads: int) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})


def openvino_runner(path: Path, x: np.ndarray, threads: int, precision: str) -> Runner:
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    with keep_signal_stack():  # see cnnlab/export/signal_stack.py
        compiled = core.compile_model(core.read_model(str(path)), "CPU", cfg)
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})


def variants(name: str, batch: int, threads: int, folder: Path, with_compile: bool) -> dict[str, Runner]:
    """Every variant's zero-argument runner on the same input (built outside the timing)."""
    net = build_net(name)
    x = torch.rand(batch, *input_shape(name), generator=torch.Generator().manual_seed(1))
    quiet = io.StringIO()

    def eager() -> object:
        with torch.no_grad():
            return net(x)

    out: dict[str, Runner] = {"eager fp32": eager}
    for precision in ("fp32", "bf16"):
        engine = prepare(net, input_shape(name), torch.device("cpu"), InferenceOptions(precision=precision, batch=batch), log=quiet)
        settle(engine, x)
        out[f"cnnlab {precision}"] = lambda e=engine: e(x)
    if with_compile:
        for precision in ("fp32", "bf16"):
            opts = InferenceOptions(precision=precision, batch=batch, compile=True)
            engine = prepare(net, input_shape(name), torch.device("cpu"), opts, log=quiet)
            out[f"cnnlab {precision} compiled"] = lambda e=engine: e(x)
    path, xn = onnx_file(net, x, folder, name), x.numpy()
    out["onnxruntime fp32"] = ort_runner(path, xn, threads)
    out["OpenVINO f32"] = openvino_runner(path, xn, threads, "f32")
    out["OpenVINO bf16"] = openvino_runner(path, xn, threads, "bf16")
    return out


def settle(engine: nn.Module, x: torch.Tensor) -> None:
    """Run the engine until it has chosen its chunk size for this batch (it times each size on the
    first few batches, cnnlab.engine.chunking): the timings are of the steady state."""
    calls = 0
    while engine.batches is not None and engine.batches.chunker.size is None and x.shape[0] > 1:
        engine(x)
        calls += 1
    if calls:
        size, streams = engine.batches.chunker.size, engine.batches.streams
        print(f"  (engine {engine.options.precision}, batch {x.shape[0]}: chunks of {size} on {streams} stream(s), chosen over {calls} batches)")


def ms_per_image(run: Runner, batch: int, seconds: float) -> float:
    run()  # warm-up: allocations, kernel choice (and a compiled graph's first call)
    n, t0 = 0, time.perf_counter()
    while True:
        run()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= 2:
            return 1000 * dt / (n * batch)


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def measure(runs: dict[str, Runner], batch: int, rounds: int, seconds: float) -> dict[str, list[float]]:
    per: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            per[k].append(ms_per_image(runs[k], batch, seconds))
    return per


def table_rows(per: dict[str, list[float]]) -> list[str]:
    base = statistics.median(per["eager fp32"])
    rows = []
    for k, ms in per.items():
        med = statistics.median(ms)
        rows.append(f"| {k} | {' / '.join(f'{m:.2f}' for m in ms)} | {med:.2f} | {base / med:.2f}x |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", default=["resnet18", "darknet"], choices=["resnet18", "darknet"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5, help="minimum timing window per variant and round")
    ap.add_argument("--compile", action="store_true", help="also time the engine with torch.compile")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} CPUs; load {load()}")
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-infer-") as tmp:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name in args.nets:
                for batch in args.batches:
                    runs = variants(name, batch, threads, Path(tmp), args.compile)
                    before = load()
                    per = measure(runs, batch, args.rounds, args.seconds)
                    print(f"\n{name}, batch {batch}, {threads} thread(s); load {before} -> {load()}")
                    print("| variant | ms/image per round | median | vs eager fp32 |\n| --- | --- | --- | --- |")
                    print("\n".join(table_rows(per)), flush=True)


if __name__ == "__main__":
    main()
