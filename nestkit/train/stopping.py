"""How a run stops early: a stop request from a signal, and a crash explained in one line."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

from nestkit.errors import DataError, NestkitError
from nestkit.train import distributed as dist_utils
from nestkit.train.distributed import DistInfo

# SIGTERM exists everywhere Python runs, but not every platform delivers it: take what exists.
# SIGHUP: the terminal closed, or (a worker of --devices N) the launcher died; the kernel may
# repeat the latter, once per thread of the dead launcher.
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopRequest:
    """SIGINT/SIGTERM/SIGHUP set a flag; the loop saves and exits at a step boundary. A second
    SIGINT or SIGTERM gives up at once; a repeated SIGHUP does not (the kernel repeats it)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            if name == "SIGHUP":
                return
            raise KeyboardInterrupt
        self.signal_name = name

    def __enter__(self) -> StopRequest:
        for sig in _STOP_SIGNALS:
            with contextlib.suppress(ValueError, OSError):  # not the main thread, or not settable here
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def exit_code(stopped_by: str) -> int:
    """A stopped run's exit code, as the shell reports the signal that stopped it (128 + its number)."""
    stopped = getattr(signal, stopped_by, None) if stopped_by.startswith("SIG") else None
    return 128 + int(stopped) if stopped is not None else 128 + 15  # another rank's request: as SIGTERM


def explain_crash(exc: RuntimeError, info: DistInfo) -> BaseException:
    """A crash of another process, as the one line a user needs; anything else unchanged."""
    first = " ".join(str(exc).split())[:200]
    if "DataLoader worker" in first:
        return DataError(f"a data-loading worker process died ({first}); the last checkpoint is intact: "
                         "rerun the same command to resume")
    if info.distributed and dist_utils.is_peer_failure(exc):
        if os.environ.get(dist_utils.LAUNCHED_ENV):
            return SystemExit(dist_utils.PEER_LOST_EXIT)  # the launcher names the rank that died
        return NestkitError(f"rank {info.rank} lost contact with another training process ({first}); "
                            "rerun to resume from the last checkpoint")
    return exc
