"""Writing a file so that a crash, a kill or a full disk never leaves half of it.

``atomic_save`` writes to a temporary file in the same folder, flushes it to disk and renames it
over the target: the target is either the previous file or the complete new one. The operating
system's error (``No space left on device``) is what a failed write reports, not torch's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nestkit.errors import CheckpointError


def reason(exc: BaseException) -> str:
    """What went wrong, in one short line: the operating system's words for an ``OSError``."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    return text[:160] or type(exc).__name__


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _child_signals_deferred() -> Iterator[None]:
    """Hold SIGCHLD's Python handler until the block is done, then run it.

    torch's DataLoader installs a SIGCHLD handler that raises when a worker died. Raised in the
    middle of ``torch.save`` it breaks the write and reads as a checkpoint error ("unexpected
    pos ..."); deferred, the checkpoint is completed first and the dead worker is reported as such.
    """
    handler = signal.getsignal(signal.SIGCHLD) if hasattr(signal, "SIGCHLD") else None
    if not callable(handler) or threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, Any]] = []
    signal.signal(signal.SIGCHLD, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, handler)
        if pending:
            handler(*pending[0])


class _FileSink:
    """A file ``torch.save`` writes into that keeps the operating system's error.

    torch reports a failed write of a file object as its own "unexpected pos ..." error; the
    ``OSError`` behind it (``No space left on device``) is what the user needs to read.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            self.error = self.error or exc
            raise
        return len(data)

    def flush(self) -> None:
        pass


def atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` with ``torch.save`` so ``path`` is either the old file or the complete new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    sink: _FileSink | None = None
    with _child_signals_deferred():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
            try:
                sink = _FileSink(fd)
                torch.save(obj, sink)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except (OSError, RuntimeError) as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            cause = sink.error if sink is not None and sink.error is not None else exc
            raise CheckpointError(f"cannot write checkpoint {path}: {reason(cause)}") from None
