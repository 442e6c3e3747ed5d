"""Batch samplers: coverage across ranks, the seconds budget, determinism, resume."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from nestkit.data.samplers import BucketedBatchSampler, ShuffledBatchSampler, padding_fraction

DURATIONS = np.random.default_rng(0).uniform(1.0, 16.0, size=503)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_bucketed_each_item_once_within_budget(world: int) -> None:
    ranks = [BucketedBatchSampler(DURATIONS, 60.0, num_buckets=8, seed=1, rank=r, world_size=world) for r in range(world)]
    for s in ranks:
        s.set_epoch(3)
    every = ranks[0].all_batches()
    assert sorted(i for b in every for i in b) == list(range(len(DURATIONS)))
    per_rank = [list(s) for s in ranks]
    assert len({len(p) for p in per_rank}) == 1  # same number of batches on every rank
    # batch k of the epoch goes to rank k % world; the padding repeats the first batches
    dealt = [per_rank[k % world][k // world] for k in range(len(per_rank[0]) * world)]
    pad = len(dealt) - len(every)
    assert 0 <= pad < world and dealt[: len(every)] == every and dealt[len(every) :] == every[:pad]
    counts = Counter(i for b in dealt[: len(every)] for i in b)
    assert set(counts.values()) == {1} and len(counts) == len(DURATIONS)
    for b in every:
        assert DURATIONS[b].max() * len(b) <= 60.0


def test_bucketed_deterministic_and_resumable() -> None:
    a = BucketedBatchSampler(DURATIONS, 50.0, seed=7)
    b = BucketedBatchSampler(DURATIONS, 50.0, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    full = list(b)
    b.start = 5
    assert list(b) == full[5:] and list(b) == full  # start applies to one iteration only
    assert BucketedBatchSampler(DURATIONS, 50.0, seed=8).all_batches() != BucketedBatchSampler(DURATIONS, 50.0, seed=7).all_batches()


def test_bucketing_reduces_padding() -> None:
    plain = ShuffledBatchSampler(len(DURATIONS), 8, seed=0)
    bucketed = BucketedBatchSampler(DURATIONS, 8 * 9.0, num_buckets=10, seed=0)
    assert padding_fraction(list(bucketed), DURATIONS) < 0.5 * padding_fraction(list(plain), DURATIONS)


def test_padding_fraction_by_hand() -> None:
    d = [1.0, 3.0, 2.0, 2.0]
    assert padding_fraction([[0, 1], [2, 3]], d) == pytest.approx(1 - 8 / 10)
    assert padding_fraction([], d) == 0.0


@pytest.mark.parametrize("world", [1, 3])
def test_plain_sampler_nemo_behaviour(world: int) -> None:
    ranks = [ShuffledBatchSampler(10, 3, seed=2, rank=r, world_size=world) for r in range(world)]
    batches = [list(s) for s in ranks]
    items = [i for rank in batches for b in rank for i in b]
    per_rank = -(-10 // world)
    assert len(items) == per_rank * world  # padded with repeats like DistributedSampler
    assert set(items) == set(range(10))
    assert all(len(b) <= 3 for rank in batches for b in rank)
    assert [list(s) for s in ranks] == batches  # same epoch, same batches
