"""Shared building blocks."""

from __future__ import annotations

import torch

from cnnlab.models.layers import trunc_normal_


def test_trunc_normal_matches_the_truncated_distribution() -> None:
    torch.manual_seed(0)
    t = trunc_normal_(torch.empty(200_000), std=0.1)
    assert t.abs().max() <= 0.2
    # A standard normal truncated to ±2 has standard deviation 0.8796.
    assert abs(t.std().item() - 0.08796) < 0.001 and abs(t.mean().item()) < 0.001
    # Roughly 4.6 % of an untruncated draw would lie beyond ±2σ; none may here, yet the tails
    # just inside the bound are populated.
    assert (t.abs() > 0.19).float().mean() > 0.005
