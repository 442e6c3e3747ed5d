"""The stream of accumulation groups a run trains on: epoch after epoch, from where it stands."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

from nestkit.errors import DataError, RecipeError
from nestkit.train.contracts import TrainLoader
from nestkit.train.distributed import DistInfo
from nestkit.train.state import Position, ResumePlan


def empty_epoch_error(train_cfg: Any, info: DistInfo, loader: TrainLoader) -> DataError:
    """Why an epoch gave no batch: every item skipped (say why), or too few for one batch."""
    skipped = loader.skipped_report()
    if skipped.total and not skipped.delivered:
        return DataError(f"model.train_ds: {skipped.explain()}")
    return DataError(
        "model.train_ds yields no batch: too few usable utterances for "
        f"batch_size {train_cfg.batch_size} (drop_last={train_cfg.drop_last}) across "
        f"{info.world_size} process(es); lower the batch size or add data")


def check_epoch_bound(max_epochs: int | None, info: DistInfo, loader: TrainLoader, source: str = "") -> None:
    """An epoch bound needs ranks that end their epochs together. Tarred and Lhotse data (no
    known length) give each rank its own shards, so one rank would stop while the others still
    step, and the run would die in a mismatched collective at its very end."""
    if max_epochs is not None and info.distributed and loader.num_batches() is None:
        raise RecipeError(f"cannot bound a run of {info.world_size} processes on tarred or Lhotse data: each rank "
                          "reads its own shards and ends its epochs at its own step; bound it by "
                          "trainer.max_steps and set trainer.max_epochs=null", key="trainer.max_epochs", file=source)


class DataWait:
    """Seconds spent waiting for batches since the last :meth:`take`."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def accumulation_groups(
    loader: TrainLoader,
    position: Position,
    plan: ResumePlan,
    *,
    accumulate: int,
    max_epochs: int | None,
    wait: DataWait,
    empty_epoch: Callable[[], DataError],
) -> Iterator[list[Any]]:
    """Lists of ``accumulate`` batches; ``position`` counts epochs and batches as they go.

    A resumed run continues its epoch where the checkpoint left it: from the loader's own saved
    position, or by replaying the epoch up to ``plan.skip_batches``. ``empty_epoch`` is the
    error for an epoch that yields no batch at all."""
    restored, skip = plan.loader_restored, plan.skip_batches
    while max_epochs is None or position.epoch < max_epochs:
        if restored:
            restored = False  # continue the restored epoch at its saved position
        else:
            loader.set_epoch(position.epoch)
        batches = iter(loader)
        for _ in range(skip):
            next(batches, None)
        skip = 0
        seen_any = position.batches_in_epoch > 0
        while True:
            start = time.perf_counter()
            group = list(itertools.islice(batches, accumulate))
            wait.seconds += time.perf_counter() - start
            if not group:
                break
            seen_any = True
            position.batches_in_epoch += len(group)
            yield group
        if not seen_any:
            raise empty_epoch()
        position.epoch += 1
        position.batches_in_epoch = 0
