"""The one inference engine behind every command that predicts (``cnnlab predict``, ``cnnlab valid``,
``cnnlab darknet classifier predict|valid``, ``darknet detector test``).

:func:`prepare` turns a trained model into an :class:`InferenceModel`, once, at load:

* a copy of the model in eval mode with BatchNorm folded into the convolutions (:mod:`.fold`);
* channels_last activations, convolution weights prepacked for oneDNN with ReLU/leaky fused
  (:mod:`.packed_conv`; a zoo net's ReLUs and residual adds by :mod:`.fuse_relu`) and unpadded max
  pools as strided maxima (:mod:`.strided_pool`) on the CPU;
* ``precision="bf16"``: weights and activations in bfloat16 where the CPU computes it natively
  (AVX-512 BF16 / AMX); refused elsewhere. A darknet net's [softmax]/[yolo]/[region] heads still
  run in float32, so probabilities and boxes are decoded at full precision, and so does a layer torch
  has no bf16 kernel for (LRN; :mod:`.fp32_islands`), named in one line;
* ``compile=True``: ``torch.compile`` (inductor, frozen weights) on top; inductor caches what it
  builds, so only the first run of a model pays the full compile time;
* batches on the CPU run in chunks of the size that proves fastest on them, on a single-threaded
  stream per thread when there are several threads and ``batch`` is more than 1 (:mod:`.chunking`);
  prepared for one image (``batch`` 1), a network runs one image on all threads or on one, whichever
  timed faster (:mod:`.thread_choice`: waking sleeping threads can cost more than they give);
* calls run under ``torch.inference_mode``; outputs come back in float32.

The default (fp32, no compile) gives the eager model's outputs up to float rounding (the darknet
reference tests hold it to rtol 1e-4). Another ``backend`` (onnxruntime, OpenVINO) runs the same
network exported once (:mod:`cnnlab.engine.backends`).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TextIO

import torch
from torch import nn

from cnnlab.engine.chunking import BatchRunner
from cnnlab.engine.fuse_relu import fuse_relus
from cnnlab.engine.packed_conv import packing_available
from cnnlab.errors import CnnlabError
from cnnlab.threads import on_threads

Precision = Literal["fp32", "bf16"]
Backend = Literal["torch", "onnxruntime", "openvino"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino")


@dataclass(frozen=True)
class InferenceOptions:
    precision: Precision = "fp32"
    backend: Backend = "torch"
    compile: bool = False  # torch.compile (inductor) on top of the folded, packed model
    batch: int = 1  # the batch size the weights are packed (and a compiled graph traced) for

    def is_default(self) -> bool:
        return self.precision == "fp32" and self.backend == "torch" and not self.compile

    def describe(self) -> str:
        return f"{self.backend} {self.precision}{' compiled' if self.compile else ''}"


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 convolutions natively (on the CPU: oneDNN's AVX-512 BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_options(opts: InferenceOptions, device: torch.device) -> None:
    """Refuse, in one line, what this machine cannot run."""
    if opts.precision not in PRECISIONS:
        raise CnnlabError(f"unknown --precision {opts.precision!r}; use one of {', '.join(PRECISIONS)}")
    if opts.backend not in BACKENDS:
        raise CnnlabError(f"unknown --backend {opts.backend!r}; use one of {', '.join(BACKENDS)}")
    if opts.backend == "onnxruntime" and opts.precision != "fp32":
        raise CnnlabError("--backend onnxruntime runs fp32 only (its CPU provider has no bf16 convolutions); "
                          "use --backend openvino or --backend torch for --precision bf16")  # fmt: skip
    if opts.backend != "torch" and opts.compile:
        raise CnnlabError(f"--compile (torch.compile) applies to --backend torch; drop it for --backend {opts.backend}")
    if opts.precision == "bf16" and not bf16_supported(device):
        raise CnnlabError(
            f"--precision bf16 needs native bfloat16 on {device} (AVX-512 BF16 or AMX on a CPU); this one has "
            f"{torch.backends.cpu.get_cpu_capability()} without it: use --precision fp32"
        )
    if opts.backend != "torch" and device.type != "cpu":
        raise CnnlabError(f"--backend {opts.backend} runs on the CPU; drop --device {device} or use --backend torch")


class InferenceModel(nn.Module):
    """A prepared network: ``model(x)`` with ``x`` (N, C, H, W) float on the model's device returns
    what the original model returns (a tensor, or a list for darknet detectors), in float32."""

    def __init__(self, run: Callable, options: InferenceOptions, device: torch.device, inner: nn.Module | None) -> None:
        super().__init__()
        self._run, self.options, self.device = run, options, device
        self.inner = inner  # the prepared torch module (None for another backend)
        # a compiled graph is traced for one batch size, and a GPU wants the whole batch
        on_cpu = device.type == "cpu" and inner is not None and not options.compile
        self.batches = BatchRunner.for_threads(torch.get_num_threads(), options.batch) if on_cpu else None
        self.dtype = torch.bfloat16 if options.precision == "bf16" and options.backend == "torch" else torch.float32
        self.one_image_threads: int | None = None  # set by prepare() when it timed the count (thread_choice)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        with torch.inference_mode():
            if self.batches is not None and x.shape[0] > 1:
                out = self.batches(self._piece, x)
            else:
                with on_threads(self.one_image_threads):
                    out = self._piece(x)
            if isinstance(out, (list, tuple)):
                return [o.float() for o in out]
            return out.float()

    def _piece(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """The network on (part of) a batch, converted here so each stream converts its own part."""
        x = x.to(self.device, self.dtype, non_blocking=True)
        if x.ndim == 4 and self.device.type == "cpu" and self.inner is not None:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._run(x)

    def train(self, mode: bool = True) -> "InferenceModel":
        if mode:
            raise CnnlabError("an inference model cannot be trained; train the original model")
        return super().train(False)


def prepare(model: nn.Module, example: tuple[int, ...], device: torch.device, options: InferenceOptions = InferenceOptions(),
            cache_key: str | None = None, log: TextIO | None = None) -> InferenceModel:  # fmt: skip
    """``model`` ready for inference on ``device`` with inputs of ``example`` = (C, H, W) (the model
    itself is not changed). Non-default options print one line saying they are in use."""
    check_options(options, device)
    if not options.is_default():
        print(f"inference: {options.describe()} (not the default torch fp32 path)", file=log or sys.stderr)
    if options.backend != "torch":
        from cnnlab.engine.backends import exported_runner

        return InferenceModel(exported_runner(model, example, options, cache_key), options, device, None)
    net = _torch_model(model, (options.batch, *example), device, options, log or sys.stderr)
    run: Callable = net
    if options.compile:
        run = _compiled(net)
    elif device.type == "cpu" and packing_available():
        dtype = torch.bfloat16 if options.precision == "bf16" else torch.float32
        run = fuse_relus(net, torch.zeros(options.batch, *example, dtype=dtype).contiguous(memory_format=torch.channels_last))
    engine = InferenceModel(run, options, device, net)
    if device.type == "cpu" and options.batch == 1 and not options.compile:
        from cnnlab.engine.thread_choice import one_image_threads

        image = torch.zeros(1, *example, dtype=engine.dtype).contiguous(memory_format=torch.channels_last)
        engine.one_image_threads = one_image_threads(run, net, image)
    return engine


def _torch_model(model: nn.Module, input_size: tuple[int, ...], device: torch.device, options: InferenceOptions,
                 log: TextIO) -> nn.Module:  # fmt: skip
    from cnnlab.engine.fold import fold_batchnorm
    from cnnlab.engine.packed_conv import pack_convolutions
    from cnnlab.engine.strided_pool import use_strided_pools

    net = copy.deepcopy(model).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    fold_batchnorm(net)
    if options.precision == "bf16":
        net = net.to(torch.bfloat16)
        _darknet_heads_in_fp32(net)
        _fp32_where_bf16_is_missing(net, input_size, device, log)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
        use_strided_pools(net)
        if packing_available() and not options.compile:  # inductor packs (and fuses) by itself
            pack_convolutions(net, input_size, winograd_too=_threads_per_call(options.batch) == 1)
    return net


def _threads_per_call(batch: int) -> int:
    """Intra-op threads each layer will run on: a stream's for batches (:class:`InferenceModel`
    sends them through a :class:`BatchRunner`), all of them for single images."""
    threads = torch.get_num_threads()
    return BatchRunner.for_threads(threads, batch).threads_per_stream if batch > 1 else threads


class _Fp32Head(nn.Module):
    """A darknet head layer (softmax, yolo, region) run on float32 input in a bf16 network."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer.float()
        for name in ("is_detection", "refs", "kind", "in_shape", "out_shape", "classes", "outputs"):
            if hasattr(layer, name):
                setattr(self, name, getattr(layer, name))

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        return self.layer(x.float(), outputs)

    def __getattr__(self, name: str):  # detection decoding reads the head's anchors, masks, ...
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("layer"), name)


def _darknet_heads_in_fp32(net: nn.Module) -> None:
    from cnnlab.darknet.layers import Region, Softmax, Yolo
    from cnnlab.darknet.model import DarknetNet

    for m in net.modules():
        if isinstance(m, DarknetNet):
            for i, layer in enumerate(m.layers):
                if isinstance(layer, (Softmax, Yolo, Region)):
                    m.layers[i] = _Fp32Head(layer)


def _fp32_where_bf16_is_missing(net: nn.Module, input_size: tuple[int, ...], device: torch.device, log: TextIO) -> None:
    from cnnlab.engine.fp32_islands import run_unsupported_in_fp32

    example = torch.zeros(1, *input_size[1:], dtype=torch.bfloat16, device=device)
    if wrapped := run_unsupported_in_fp32(net, example):
        layers = ", ".join(f"{name} ({type(net.get_submodule(name).layer).__name__})" for name in wrapped)
        print(f"inference: no bfloat16 kernel here for {layers}; computed in float32", file=log)


def _compiled(net: nn.Module) -> Callable:
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        raise CnnlabError("--compile needs a C++ compiler (g++) for torch.compile's CPU code; install one or drop --compile")
    return torch.compile(net, dynamic=False, options={"freezing": True})
