"""The torch DataLoader under nestkit's loaders: worker count, start method, pinned memory.

* Never more workers than CPUs this process may use (one note line when a recipe asks for
  more): extra workers only contend, and torch warns about them.
* Pinned memory only where a CUDA device exists (torch warns and pins nothing otherwise).
* ``multiprocessing_context`` picks the workers' start method (``spawn`` is Windows' and macOS'
  default; None keeps the platform's). Under ``spawn`` every worker gets a pickled copy of the
  dataset, so datasets keep the manifest out of it (batch specs carry the items' paths).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("nestkit.data")
_NOTED: set[str] = set()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def worker_count(requested: int, key: str = "num_workers") -> int:
    """``requested`` capped at the usable CPUs, with one note line the first time it is capped."""
    cpus = usable_cpus()
    if requested <= cpus:
        return requested
    cpus_are, workers = ("1 CPU is", "1 loader worker") if cpus == 1 else (f"{cpus} CPUs are", f"{cpus} loader workers")
    note = f"note: {key}={requested} but {cpus_are} usable here: using {workers}"
    if note not in _NOTED:
        _NOTED.add(note)
        log.warning(note)
    return cpus


def pin_memory(requested: bool) -> bool:
    return requested and torch.cuda.is_available()


def identity(batch: Any) -> Any:
    return batch


def worker_init(_: int) -> None:
    torch.set_num_threads(1)  # one decode stream per worker; more threads only contend
    sys.excepthook = quiet_when_main_is_gone(sys.excepthook)


def quiet_when_main_is_gone(hook: Callable[..., Any]) -> Callable[..., Any]:
    """A worker's excepthook that stays silent when the main process dropped a connection.

    The worker's handle-sharing thread (multiprocessing.resource_sharer) reports a broken
    handshake through ``sys.excepthook``. That happens when the main process stops mid-fetch
    because it is ending the run (another worker died, Ctrl-C); the main process reports the
    real cause in one line, and this traceback would only bury it.
    """

    def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if not issubclass(kind, (EOFError, ConnectionError)):
            hook(kind, value, tb)

    return excepthook


def torch_loader(
    dataset: Any, *, sampler: Any, workers: int, pin: bool, context: str | None, seed: int, persistent: bool,
) -> torch.utils.data.DataLoader[Any]:
    """One batch per item (``batch_size=None``): the datasets build whole batches themselves."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        collate_fn=identity,
        num_workers=workers,
        pin_memory=pin,
        worker_init_fn=worker_init if workers else None,
        multiprocessing_context=context if workers else None,
        persistent_workers=workers > 0 and persistent,
        prefetch_factor=4 if workers else None,
        # Its own generator: iterating must never draw from torch's global RNG, or a run resumed
        # mid-epoch would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
    )
