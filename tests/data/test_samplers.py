"""ClassBalancedSampler (``--balance sampler``): the same contract as the general loader's sampler —
an order that is a function of (seed, epoch), split over ranks without overlap in equal shares, and a
mid-epoch resume that continues the same sequence — plus the balance it exists for."""

from __future__ import annotations

from collections import Counter

import pytest

from cnnlab.data.samplers import ClassBalancedSampler
from cnnlab.errors import CnnlabError

# 3 classes, heavily imbalanced: 90, 9 and 4 images (103, odd, so the world sizes below leave a remainder)
LABELS = [0] * 90 + [1] * 9 + [2] * 4


def draws(sampler: ClassBalancedSampler, epoch: int, start: int = 0) -> list[int]:
    sampler.set_epoch(epoch, start)
    keys = list(sampler)
    assert all(e == epoch for e, _ in keys) and len(keys) == len(sampler)
    return [i for _, i in keys]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_split_the_one_process_sequence_in_equal_shares(world):
    whole = draws(ClassBalancedSampler(LABELS, seed=5), epoch=2)
    shares = [draws(ClassBalancedSampler(LABELS, seed=5, rank=r, world=world), epoch=2) for r in range(world)]
    n = len(LABELS) // world
    assert [len(s) for s in shares] == [n] * world  # equal shares: every rank takes the same number of steps
    # rank r takes draws r, r + W, …: no draw is taken twice, and together they are the one-process epoch
    interleaved = [shares[k % world][k // world] for k in range(n * world)]
    assert interleaved == whole[: n * world]


def test_order_depends_on_seed_and_epoch_only():
    a, b = ClassBalancedSampler(LABELS, seed=1), ClassBalancedSampler(LABELS, seed=1)
    draws(a, 0)  # the history of the sampler does not matter
    assert draws(a, 3) == draws(b, 3)
    assert draws(a, 3) != draws(a, 4)
    assert draws(ClassBalancedSampler(LABELS, seed=2), 3) != draws(b, 3)


@pytest.mark.parametrize("world,rank", [(1, 0), (2, 1)])
def test_resume_at_start_continues_the_same_sequence(world, rank):
    full = draws(ClassBalancedSampler(LABELS, seed=7, rank=rank, world=world), epoch=1)
    sampler = ClassBalancedSampler(LABELS, seed=7, rank=rank, world=world)  # a fresh process resuming
    resumed = draws(sampler, epoch=1, start=17)  # draws() also checks len() is what is left
    assert resumed == full[17:]
    assert len(sampler) == len(full) - 17


def test_rare_classes_are_drawn_as_often_as_common_ones():
    labels = LABELS * 20  # 2060 images, so 2060 draws
    counts = Counter(labels[i] for i in draws(ClassBalancedSampler(labels, seed=0), 0))
    for c in (0, 1, 2):
        assert abs(counts[c] / 2060 - 1 / 3) < 0.05, counts  # natural frequencies: 87 %, 9 %, 4 %


def test_empty_training_set_is_one_clear_error():
    with pytest.raises(CnnlabError, match="training set is empty"):
        ClassBalancedSampler([], seed=0)


def test_alpha_draws_classes_in_proportion_to_a_power_of_their_size():
    labels = [0] * 400 + [1] * 100 + [2] * 25  # square roots 20 : 10 : 5
    for alpha, expected in ((0.5, (4 / 7, 2 / 7, 1 / 7)), (0.0, (400 / 525, 100 / 525, 25 / 525))):
        sampler = ClassBalancedSampler(labels * 8, seed=0, alpha=alpha)
        counts = Counter((labels * 8)[i] for i in draws(sampler, 0))
        for c in (0, 1, 2):
            assert abs(counts[c] / len(labels * 8) - expected[c]) < 0.02, (alpha, counts)
    assert draws(ClassBalancedSampler(LABELS, seed=3, alpha=1.0), 1) == draws(ClassBalancedSampler(LABELS, seed=3), 1)
    with pytest.raises(CnnlabError, match="--balance-alpha must be between 0"):
        ClassBalancedSampler(LABELS, seed=0, alpha=1.5)
