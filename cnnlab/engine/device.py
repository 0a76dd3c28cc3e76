"""Device and precision choices, made at run time (never a hard-coded ``.cuda()``)."""

from __future__ import annotations

import contextlib

import torch

from cnnlab.errors import CnnlabError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CnnlabError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnnlabError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    return device


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. ``auto``: bf16 on CPU, fp16 on CUDA."""
    if amp == "off":
        return None
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16 if device.type == "cpu" else None
    if amp in ("bf16", "fp16"):
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        if device.type == "cpu" and dtype is torch.float16:
            raise CnnlabError("fp16 autocast is not supported on the CPU; use --amp bf16 or --amp off")
        return dtype
    raise CnnlabError(f"amp must be auto, off, bf16 or fp16, not {amp!r}")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a CPU allocation that failed (PyTorch's allocator raises a RuntimeError)."""
    text = str(e)
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or any(
        s in text for s in ("can't allocate memory", "out of memory", "Cannot allocate memory", "std::bad_alloc")
    )
