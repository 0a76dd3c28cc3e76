"""Darknet's training hyper-parameters from ``[net]`` and its learning-rate policies.

Read as darknet's ``parse_net_options`` reads them (same defaults; ``batch`` is divided by
``subdivisions``), and :meth:`NetTraining.rate` is ``get_current_rate``: burn-in
``lr·(b/burn_in)^power`` first, then constant, step (``lr·scale^(b/step)``), steps (multiply by
each ``scales[i]`` once ``b >= steps[i]``), exp (``lr·gamma^b``), poly (``lr·(1-b/max)^power``),
sigmoid (``lr/(1+exp(gamma·(b-step)))``) or random (``lr·U(0,1)^power``, seeded by the batch
number here so that a resumed run repeats it). Darknet falls back to constant on an unknown
policy name and crashes on ``steps=``/``scales=`` of unequal length; both are errors here.
:class:`DarknetRate` is that schedule as a torch ``LRScheduler``, stepped by the engine after each update.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
from torch.optim.lr_scheduler import LRScheduler

from cnnlab.darknet.cfg import Section
from cnnlab.errors import CnnlabError

POLICIES = ("constant", "step", "steps", "exp", "poly", "sigmoid", "random")


@dataclass
class NetTraining:
    batch: int = 1  # images per forward pass (cfg batch / subdivisions)
    subdivisions: int = 1  # forward passes per weight update
    learning_rate: float = 0.001
    momentum: float = 0.9
    decay: float = 0.0001  # weight decay on conv/connected weights (not biases or BN scales)
    policy: str = "constant"
    steps: list[int] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    step: int = 1
    scale: float = 1.0
    gamma: float = 1.0
    power: float = 4.0
    burn_in: int = 0
    max_batches: int = 0

    @property
    def images_per_update(self) -> int:
        """darknet's ``net->batch * net->subdivisions``: the images behind one "batch" of its counter."""
        return self.batch * self.subdivisions

    @classmethod
    def from_net(cls, net: Section) -> "NetTraining":
        subdivs = net.int("subdivisions", 1)
        batch = net.int("batch", 1)
        if subdivs < 1 or batch < subdivs:
            raise CnnlabError(
                f"{net.where('subdivisions')}: batch={batch} with subdivisions={subdivs} leaves no image per forward pass; "
                "make batch a multiple of subdivisions"
            )
        policy = net.str("policy", "constant") or "constant"
        if policy not in POLICIES:
            raise CnnlabError(f"{net.where('policy')}: unknown policy={policy} (darknet would silently use constant); use one of {', '.join(POLICIES)}")
        t = cls(
            batch=batch // subdivs,
            subdivisions=subdivs,
            learning_rate=net.float("learning_rate", 0.001),
            momentum=net.float("momentum", 0.9),
            decay=net.float("decay", 0.0001),
            policy=policy,
            burn_in=net.int("burn_in", 0),
            power=net.float("power", 4.0),
            max_batches=net.int("max_batches", 0),
        )
        if policy == "step":
            t.step, t.scale = net.int("step", 1), net.float("scale", 1.0)
            if t.step < 1:
                raise CnnlabError(f"{net.where('step')}: policy=step needs step= of at least 1")
        elif policy == "steps":
            if not (net.has("steps") and net.has("scales")):
                raise CnnlabError(f"{net.where('policy')}: policy=steps needs both steps= and scales=")
            t.steps, t.scales = net.ints("steps"), net.floats("scales")
            if len(t.steps) != len(t.scales):
                raise CnnlabError(
                    f"{net.where('scales')}: steps= has {len(t.steps)} values but scales= has {len(t.scales)}; give one scale per step"
                )
        elif policy == "exp":
            t.gamma = net.float("gamma", 1.0)
        elif policy == "sigmoid":
            t.gamma, t.step = net.float("gamma", 1.0), net.int("step", 1)
        return t

    def rate(self, batch_num: int) -> float:
        """The learning rate darknet uses for the update that brings its counter to ``batch_num``."""
        lr = self.learning_rate
        if batch_num < self.burn_in:
            return lr * (batch_num / self.burn_in) ** self.power
        if self.policy == "constant":
            return lr
        if self.policy == "step":
            return lr * self.scale ** (batch_num // self.step)
        if self.policy == "steps":
            for s, k in zip(self.steps, self.scales):
                if s > batch_num:
                    break
                lr *= k
            return lr
        if self.policy == "exp":
            return lr * self.gamma**batch_num
        if self.policy == "poly":
            return lr * max(0.0, 1 - batch_num / self.max_batches) ** self.power if self.max_batches else lr
        if self.policy == "sigmoid":
            return lr / (1 + math.exp(self.gamma * (batch_num - self.step)))
        return lr * random.Random(batch_num).random() ** self.power  # "random"


class DarknetRate(LRScheduler):
    """:meth:`NetTraining.rate` as a torch scheduler. Darknet sets the rate of the update number it is
    about to reach, so after ``last_epoch`` updates of a run that started at update ``start`` the
    optimizer holds ``rate(start + last_epoch + 1)``. The rates are darknet's absolute values (not
    factors of a base rate), so the optimizer sees exactly the number darknet computes."""

    def __init__(self, optimizer: torch.optim.Optimizer, training: NetTraining, start: int) -> None:
        self.training, self.start = training, start
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        rate = self.training.rate(self.start + self.last_epoch + 1)
        return [rate for _ in self.optimizer.param_groups]
