"""The batch of a run: ``--global-batch`` and ``--batch-size auto``.

``batch_size`` is per process and per micro-batch (torchrun's convention); the global batch, the
images of one optimizer step, is processes × batch_size × accum_steps. ``--global-batch N`` fixes
that product: with a number for ``--batch-size`` the accumulation follows from it; with
``--batch-size auto`` the micro-batch is the largest that fits in memory with a quarter to spare —
tried by a forward and backward of synthetic images of the model's input size, starting from each
process's whole share and halving (to a divisor of the share) when memory runs out — and the
accumulation makes up the rest.
The global batch, and so the optimisation, is the same whatever the machine; only its pieces change.
The resolved numbers are what the run saves (``config.yaml``), so a resume or a restart keeps them.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._pytree import tree_flatten

from cnnlab.config import TrainConfig
from cnnlab.engine import distributed
from cnnlab.engine.device import autocast, is_out_of_memory
from cnnlab.errors import CnnlabError


def settle_batch(cfg: TrainConfig, data, world: int, device: torch.device, amp: torch.dtype | None, resume: bool) -> tuple[TrainConfig, str]:
    """``cfg`` with a numeric ``batch_size``, its ``accum_steps`` and ``global_batch`` filled in; and the
    line that says what ``--batch-size auto`` chose ("" when it was not asked for)."""
    if cfg.global_batch < 0:
        raise CnnlabError(f"--global-batch must be positive (0: processes x --batch-size x --accum-steps), got {cfg.global_batch}")
    if resume or _restarted(cfg):
        return _as_saved(cfg, world, resume), ""
    if cfg.batch_size != "auto":
        accum = accum_for(cfg.global_batch, cfg.batch_size, world, cfg.accum_steps) if cfg.global_batch else cfg.accum_steps
        return dataclasses.replace(cfg, accum_steps=accum, global_batch=world * cfg.batch_size * accum), ""
    if not cfg.global_batch:
        raise CnnlabError("--batch-size auto keeps a global batch and finds the pieces: give it with --global-batch N "
                          "(images per optimizer step over all processes, e.g. --global-batch 256)")  # fmt: skip
    share = share_of(cfg.global_batch, world)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the run's own stream is untouched
        micro, failed = largest_fitting(_fits(cfg, data, world, device, amp), share)
    micro, failed = min(distributed.gather_objects((micro, failed)), key=lambda r: r[0])  # every rank takes the smallest
    _release(device)
    if micro == 0:
        raise CnnlabError(f"--batch-size auto: not even one {cfg.model} image fits in memory on {device} for a forward and "
                          "backward; use a smaller --model or input size (--preprocess), or another --device")  # fmt: skip
    accum = share // micro
    return dataclasses.replace(cfg, batch_size=micro, accum_steps=accum), _chosen_line(micro, failed, accum, cfg.global_batch, world)


def share_of(global_batch: int, world: int) -> int:
    if global_batch % world:
        raise CnnlabError(f"--global-batch {global_batch} does not split evenly over {world} processes; give a multiple of {world}")
    return global_batch // world


def accum_for(global_batch: int, batch_size: int, world: int, accum_steps: int) -> int:
    """The accumulation steps that make ``global_batch`` from ``batch_size`` per process on ``world`` processes."""
    share = share_of(global_batch, world)
    if share % batch_size:
        raise CnnlabError(f"--global-batch {global_batch} is not a multiple of {world} process(es) x --batch-size {batch_size}; "
                          "change one of them, or use --batch-size auto")  # fmt: skip
    accum = share // batch_size
    if accum_steps not in (1, accum):
        raise CnnlabError(f"--global-batch {global_batch} with --batch-size {batch_size} on {world} process(es) means "
                          f"--accum-steps {accum}, not {accum_steps}: drop one of them")  # fmt: skip
    return accum


def largest_fitting(fits: Callable[[int], bool], share: int) -> tuple[int, int | None]:
    """The largest micro-batch that ``fits``, tried from ``share`` down, each next one the largest divisor
    of ``share`` at most half the last (so accumulation makes exactly ``share``); and the last that did
    not fit (None when ``share`` did). ``(0, 1)`` when not even one fits."""
    micro, failed = share, None
    while micro and not fits(micro):
        failed = micro
        micro = next((d for d in range(micro // 2, 0, -1) if share % d == 0), 0)
    return micro, failed


def step_fits(step: Callable[[int], None], micro: int, device: torch.device) -> bool:
    """Whether ``step(micro)`` runs without running out of memory (CUDA's OutOfMemoryError, or a CPU
    allocation that fails); memory is released after each try, so a smaller one starts clean."""
    try:
        step(micro)
        return True
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
        # oneDNN reports a workspace it could not allocate as a primitive it could not create
        if not (is_out_of_memory(e) or "could not create a primitive" in str(e)):
            raise
        return False
    finally:
        _release(device)


def with_headroom(micro: int) -> int:
    """The images a try of ``micro`` carries: a quarter more. The run holds a little more than the
    probe (its loaders, a validation pass, what other threads allocate, fragmentation over many
    steps), so a micro-batch that only just fits the probe runs out in the run: on an AMD EPYC a
    probe that passed 32 by a hair left the run out of memory at its first step."""
    return micro + (micro + 3) // 4


def _fits(cfg: TrainConfig, data, world: int, device: torch.device, amp: torch.dtype | None) -> Callable[[int], bool]:
    """``fits(micro)``. On the CPU each try runs in a forked child: the C heap of a process keeps the
    pages a big try touched, and they would count against every later try and the run itself (a
    failed try would leave no room for a smaller one). On CUDA, in this process: the caching
    allocator gives its blocks back (and CUDA does not survive a fork)."""
    if device.type == "cpu" and hasattr(os, "fork"):
        return lambda micro: _in_child(lambda: step_fits(_probe(cfg, data, world, device, amp), with_headroom(micro), device))
    step = _probe(cfg, data, world, device, amp)
    return lambda micro: step_fits(step, with_headroom(micro), device)


def _in_child(try_: Callable[[], bool]) -> bool:
    """``try_()`` in a forked child; a child killed by the system (out of memory) did not fit."""
    import pickle

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: one thread (GNU OpenMP's pool does not survive a fork), report, leave at once
        os.close(r)
        try:
            torch.set_num_threads(1)
            result: object = try_()
        except BaseException as e:  # noqa: BLE001  (reported to the parent, which raises it)
            result = f"{type(e).__name__}: {e}"
        os.write(w, pickle.dumps(result))
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = f.read()
    os.waitpid(pid, 0)
    result = pickle.loads(report) if report else False
    if isinstance(result, str):
        raise CnnlabError(f"--batch-size auto: a trial step failed: {result}")
    return result


def _probe(cfg: TrainConfig, data, world: int, device: torch.device, amp: torch.dtype | None) -> Callable[[int], None]:
    """``step(micro)``: two micro-batches of ``micro`` synthetic images and an optimizer step, on a fresh
    copy of the run's network prepared as the run prepares it (uint8 images normalised on the device,
    forward, backward with the gradients accumulated, the run's optimizer stepping and allocating its
    state), holding what the run holds beside: an EMA copy of the weights, and with several processes
    DDP's gradient buckets. The loss is the sum of the outputs: the memory of a step is its
    activations, gradients and state, not the few numbers of a real loss."""
    from cnnlab.engine.build import build_preprocess, prepare_for_training
    from cnnlab.engine.optim import build_optimizer
    from cnnlab.engine.task import build_task

    task = build_task(cfg.task, dataclasses.replace(cfg, batch_size=1), data.train, device)
    model = task.build_model(cfg.model, cfg.model_kwargs).train()
    pre = build_preprocess(model, cfg.preprocess)
    normalize = prepare_for_training(model, pre, cfg, device, amp).train()
    optimizer = build_optimizer(model, cfg.opt, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.no_decay_bn_bias)
    copies = (1 if cfg.ema_decay > 0 else 0) + (1 if world > 1 else 0)
    held = [torch.zeros_like(p) for p in model.parameters() for _ in range(copies)]

    def step(micro: int) -> None:
        _ = held  # kept alive while probing
        try:
            for _ in range(2):  # the second micro-batch meets the first's gradients and the allocator's leftovers
                images = torch.randint(0, 256, (micro, *pre.input_size), dtype=torch.uint8, device=device)
                with autocast(device, amp):
                    out = model(normalize(images))
                leaves = [t for t in tree_flatten(out)[0] if torch.is_tensor(t) and t.is_floating_point()]
                sum(t.float().sum() for t in leaves).backward()
                images = out = leaves = None  # noqa: F841  (as the loop drops a batch before loading the next)
            optimizer.step()
        finally:
            optimizer.zero_grad(set_to_none=True)

    return step


def _chosen_line(micro: int, failed: int | None, accum: int, global_batch: int, world: int) -> str:
    tried = f"{failed} did not" if failed else "the whole share of each process"
    steps = f"{accum} accumulation step{'s' if accum > 1 else ''}"
    over = f" over {world} processes" if world > 1 else ""
    return f"batch-size auto: micro-batch {micro} fits ({tried}), {steps} for the global batch {global_batch}{over}"


def _restarted(cfg: TrainConfig) -> bool:
    """A torchrun restart of a run that had started (its --out holds a config): it keeps that run's batch."""
    again = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0").strip("0") != ""
    return again and bool(cfg.out) and (Path(cfg.out) / "config.yaml").is_file()


def _as_saved(cfg: TrainConfig, world: int, resume: bool) -> TrainConfig:
    """A resumed or restarted run keeps the per-process batch and accumulation it started with (at
    another world size its global batch changes with it, as it always has)."""
    if cfg.batch_size == "auto":
        if resume:
            raise CnnlabError("a resumed run keeps the batch it started with (its config.yaml): drop --batch-size auto")
        from cnnlab import config

        saved = config.load_saved(Path(cfg.out) / "config.yaml")
        cfg = dataclasses.replace(cfg, batch_size=saved["batch_size"], accum_steps=saved["accum_steps"])
    return dataclasses.replace(cfg, global_batch=world * cfg.batch_size * cfg.accum_steps)


def _release(device: torch.device) -> None:
    """Give the memory of a try back: CUDA's cached blocks, and on Linux the C heap's free pages (glibc
    keeps freed small blocks in the process, where they would count against the run's own step)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): nothing to trim
        return None


_LIBC = _libc()
