"""Processes working as one: PyTorch's ``torch.distributed`` under ``torchrun``, never a home-made one.

:func:`setup` reads the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
joins the process group — gloo on the CPU, nccl on CUDA, chosen at run time — with each rank on its
own device. Without those variables it is one process and every collective here is a no-op, so the
engine has one code path for any number of processes.

Reductions run in fp32 or int64: gloo cannot reduce bf16, and counts must be exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def env_dist() -> Dist:
    """Rank, world size and local rank from torchrun's environment (one process without it)."""
    try:
        return Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise CnnlabError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group when launched by torchrun; returns the rank info and this rank's device."""
    d = env_dist()
    if not d.enabled:
        return d, device
    if device.type == "cuda":
        if d.local_rank >= torch.cuda.device_count():
            raise CnnlabError(f"local rank {d.local_rank} but only {torch.cuda.device_count()} GPU(s) here; lower --nproc-per-node")
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = _restart_store(d.world)
        extra = {"store": store, "rank": d.rank, "world_size": d.world} if store is not None else {}
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None, **extra)
    return d, device


def _restart_store(world: int) -> dist.Store | None:
    """After a torchrun restart: the agent's store under a prefix of this attempt. The agent keeps one
    store across restarts, so without the prefix a restarted rank reads the dead attempt's gloo
    addresses and fails to connect (seen with torch 2.14's ``--standalone``). None: plain env://."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if attempt in ("", "0") or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False)
    return dist.PrefixStore(f"/cnnlab/attempt_{attempt}", base)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def sum_floats(values: list[float], device: torch.device | None = None) -> list[float]:
    """Element-wise sum over ranks, in float64 (exact for counts, never bf16)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """True on every rank when it is true on any (e.g. a preemption signal that reached one rank)."""
    return sum_floats([float(flag)], device)[0] > 0


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def average_buffers(model: nn.Module, device: torch.device | None = None) -> None:
    """Average BatchNorm running statistics over ranks (timm's ``--dist-bn reduce``): on the CPU, where
    SyncBatchNorm does not run, each rank's statistics come from its own share of the data."""
    if not active():
        return
    world = dist.get_world_size()
    for name, buf in model.named_buffers():
        if buf.is_floating_point() and ("running_mean" in name or "running_var" in name):
            t = buf.detach().to(_comm_device(device), torch.float32)
            dist.all_reduce(t)
            buf.copy_((t / world).to(buf.dtype))


def _comm_device(device: torch.device | None) -> torch.device:
    # nccl reduces CUDA tensors only; gloo reduces CPU tensors
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return device if device is not None and device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def wrap(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """DistributedDataParallel around ``model`` when there is more than one process."""
    if not active():
        if sync_bn and device.type != "cuda":
            raise CnnlabError(_SYNC_BN_CPU)
        return model
    if sync_bn:
        if device.type != "cuda":
            raise CnnlabError(_SYNC_BN_CPU)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    # rank-local BatchNorm statistics (averaged per epoch), not rank 0's copied at every forward
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False, gradient_as_bucket_view=True)


_SYNC_BN_CPU = (
    "--sync-bn needs CUDA (PyTorch's SyncBatchNorm does not run on the CPU); on the CPU the running "
    "statistics are averaged across processes after each epoch instead: drop --sync-bn"
)
