"""Batch samplers: NeMo's plain shuffled batches, and duration-bucketed dynamic batches.

Both are deterministic for (seed, epoch), split the epoch across ranks without overlap, give
every rank the same number of batches, and can start at a batch position (exact resume).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


def _generator(seed: int, epoch: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + int(epoch))
    return g


class _EpochSampler:
    """Shared epoch/position bookkeeping; subclasses build the rank's batch list."""

    def __init__(self, *, seed: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.start = 0  # first batch to yield (resume)
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch (all of them, ignoring ``start``)."""
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._rank_batches())
        return self._cache[1]

    def _rank_batches(self) -> list[list[int]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start = self.start, 0
        yield from self.batches()[start:]

    def __len__(self) -> int:
        return len(self.batches())


class ShuffledBatchSampler(_EpochSampler):
    """NeMo's behaviour: a distributed sampler (pads the item list with repeats so ranks get
    equal shares) followed by fixed-size batches of ``batch_size`` utterances."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        self.num_items, self.batch_size = num_items, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last

    def _rank_batches(self) -> list[list[int]]:
        n = self.num_items
        order = torch.randperm(n, generator=_generator(self.seed, self.epoch)) if self.shuffle else torch.arange(n)
        per_rank = -(-n // self.world_size)
        total = per_rank * self.world_size
        if total > n:  # repeat from the start, as torch's DistributedSampler does
            order = torch.cat([order, order[: total - n]])
        mine = order[self.rank : total : self.world_size].tolist()
        out = [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out


class BucketedBatchSampler(_EpochSampler):
    """Dynamic batches of similar-length utterances, at most ``batch_duration`` padded seconds.

    Per epoch: items are sorted by duration (ties in random order) and cut into
    ``num_buckets`` buckets of equal count; each bucket is shuffled and packed greedily into
    batches whose padded size (``count * longest``) stays within ``batch_duration``; all
    batches are then shuffled together. An utterance longer than the budget forms a batch of
    its own (filter with ``max_duration`` to avoid that). Across ranks, batch ``k`` goes to
    rank ``k % world_size``; when the count does not divide, the first batches of the epoch are
    repeated for the last ranks (``drop_last`` drops the remainder instead), so every rank
    gets the same number of batches.
    """

    def __init__(
        self,
        durations: Sequence[float] | np.ndarray,
        batch_duration: float,
        *,
        num_buckets: int = 10,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        self.durations = np.asarray(durations, dtype=np.float64)
        self.batch_duration = float(batch_duration)
        self.num_buckets = max(1, int(num_buckets))
        self.shuffle, self.drop_last = shuffle, drop_last

    def all_batches(self) -> list[list[int]]:
        """Every batch of the epoch, before the split across ranks."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.durations)
        tie = rng.permutation(n) if self.shuffle else np.arange(n)
        by_length = tie[np.argsort(self.durations[tie], kind="stable")]
        batches: list[list[int]] = []
        for bucket in np.array_split(by_length, min(self.num_buckets, max(n, 1))):
            if self.shuffle:
                bucket = rng.permutation(bucket)
            batches.extend(self._pack(bucket))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _pack(self, items: np.ndarray) -> list[list[int]]:
        """Greedy packing in the given order under the padded-seconds budget."""
        out: list[list[int]] = []
        current: list[int] = []
        longest = 0.0
        durations = self.durations
        for i in items.tolist():
            d = durations[i]
            new_longest = max(longest, d)
            if current and new_longest * (len(current) + 1) > self.batch_duration:
                out.append(current)
                current, new_longest = [], d
            current.append(i)
            longest = new_longest
        if current:
            out.append(current)
        return out

    def _rank_batches(self) -> list[list[int]]:
        batches = self.all_batches()
        w = self.world_size
        if len(batches) % w:
            if self.drop_last or not batches:
                batches = batches[: len(batches) - len(batches) % w]
            else:
                batches = batches + batches[: w - len(batches) % w]
        return batches[self.rank :: w]


def padding_fraction(batches: Sequence[Sequence[int]], durations: Sequence[float] | np.ndarray) -> float:
    """Padded share of all samples: ``1 - sum(lengths) / sum(batch size * longest)``."""
    durations = np.asarray(durations, dtype=np.float64)
    real = padded = 0.0
    for batch in batches:
        d = durations[np.asarray(batch, dtype=np.int64)]
        real += float(d.sum())
        padded += float(d.max()) * len(d) if len(d) else 0.0
    return 1.0 - real / padded if padded > 0 else 0.0
