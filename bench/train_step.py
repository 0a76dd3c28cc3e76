"""Training-step speed on the CPU: cnnlab's default train step against a plain PyTorch loop.

Claim: cnnlab's default CPU train step (bf16 autocast + channels_last, convolutions on maps of a few
pixels as matmuls (cnnlab.engine.small_map_conv), uint8 batches normalised on the device, the
engine's own ``train_one_epoch``) trains ResNet-18 at 64×64, batch 128, at least
1.8× as fast as a plain fp32 eager loop (float batches, NCHW, the usual zero_grad/forward/backward/step).
Evidence: images/s of both, measured in this one process in alternating rounds (so machine load
hits both alike), and their ratio.

    PYTHONPATH=. python bench/train_step.py [--steps 6] [--rounds 3] [--batch 128] [--size 64] [--threads 1]

Both loops train the same architecture (cnnlab's ``resnet18``, 1000 classes) from the same
initial weights with SGD (momentum 0.9, weight decay 1e-4) and cross-entropy on random data:
weights and data do not change the speed.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data.loader import Batch, BadImageLog
from cnnlab.engine.device import amp_dtype, pick_device
from cnnlab.engine.optim import build_optimizer, build_scheduler
from cnnlab.engine.build import prepare_for_training
from cnnlab.engine.loop import Trainer, train_one_epoch
from cnnlab.engine.state import TrainState
from cnnlab.tasks.classification import Classification
from cnnlab.models import create_model


@dataclass
class Setup:
    batch: int
    size: int
    steps: int  # timed optimizer steps per round
    warmup: int  # untimed steps before each round (oneDNN picks kernels on first use)


def plain_fp32_loop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, s: Setup) -> float:
    """The loop most users write: float NCHW batches, fp32, eager. Returns images/s."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()

    for _ in range(s.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(s.steps):
        step()
    return s.steps * s.batch / (time.perf_counter() - t0)


def cnnlab_default_step(model: nn.Module, images_u8: torch.Tensor, labels: torch.Tensor, s: Setup) -> float:
    """cnnlab's engine with its default config on this device (bf16 autocast + channels_last on CPU)."""
    cfg = TrainConfig()
    device = pick_device(cfg.device)
    amp = amp_dtype(cfg.amp, device)
    normalize = prepare_for_training(model, model.meta.preprocess, cfg, device, amp)
    optimizer = build_optimizer(model, cfg.opt, 0.01, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.no_decay_bn_bias)
    scheduler = build_scheduler(optimizer, s.warmup + s.steps, 1, sched="constant")
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    batch = Batch(images_u8, labels, torch.arange(s.batch), [], s.batch)
    task = Classification([str(i) for i in range(int(labels.max()) + 1)], device, cfg.label_smoothing)
    trainer = Trainer(model, task, normalize, optimizer, scheduler, scaler, None, device, amp, cfg.accum_steps, cfg.clip_grad, cfg.seed)

    def run(n: int) -> None:
        train_one_epoch(trainer, [batch] * n, TrainState(), BadImageLog(1.0))

    run(s.warmup)
    t0 = time.perf_counter()
    run(s.steps)
    return s.steps * s.batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    # One thread by default: a per-core figure is stable on a shared machine, while a two-thread
    # loop stalls whenever another process holds the second core (rounds then vary 3-5x).
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    s = Setup(args.batch, args.size, args.steps, args.warmup)

    torch.manual_seed(0)
    base = create_model("resnet18", num_classes=1000)
    images_u8 = torch.randint(0, 256, (s.batch, 3, s.size, s.size), dtype=torch.uint8)
    mean = torch.tensor(base.meta.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(base.meta.preprocess.std).view(1, 3, 1, 1)
    images_f32 = (images_u8.float() / 255 - mean) / std
    labels = torch.randint(0, 1000, (s.batch,))

    print(f"ResNet-18, {s.size}x{s.size}, batch {s.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{args.rounds} alternating rounds of {s.steps} timed steps (+{s.warmup} warm-up) each")
    plain, ours = [], []
    for r in range(args.rounds):
        plain.append(plain_fp32_loop(copy.deepcopy(base), images_f32, labels, s))
        ours.append(cnnlab_default_step(copy.deepcopy(base), images_u8, labels, s))
        print(f"  round {r + 1}: plain fp32 eager {plain[-1]:7.1f} img/s   cnnlab default {ours[-1]:7.1f} img/s")
    p, o = statistics.median(plain), statistics.median(ours)
    print(f"plain fp32 eager loop : {p:7.1f} img/s (median)")
    print(f"cnnlab default step   : {o:7.1f} img/s (median; bf16 autocast + channels_last + small-map matmul convs)")
    print(f"ratio                 : {o / p:.2f}x  (target >= 1.8x)")


if __name__ == "__main__":
    main()
