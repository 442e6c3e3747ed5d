"""A loader worker whose main process drops a handle-sharing connection mid-handshake.

This is what happens when the main process ends a run (another worker died, Ctrl-C) while it
is fetching a batch: the worker's multiprocessing.resource_sharer thread sees the handshake
break. Run as ``python dropped_handshake.py quiet|plain``; prints the worker's stderr.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import sys
from multiprocessing import resource_sharer
from multiprocessing.synchronize import Event

from nestkit.data.workers import worker_init as _worker_init


def _worker(addresses: mp.Queue, dropped: Event, quiet: bool) -> None:
    if quiet:
        _worker_init(0)
    read_end, _ = os.pipe()
    resource_sharer.DupFd(read_end)  # what sending a tensor's fd does: starts the sharing thread
    sharer = resource_sharer._resource_sharer  # type: ignore[attr-defined]
    addresses.put(sharer._address)
    dropped.wait(30)
    # The sharing thread serves one connection after the other: once it has taken stop()'s, it
    # has handled (and reported, or not) the dropped one.
    sharer.stop(timeout=30)


def main() -> None:
    ctx = mp.get_context("fork")
    addresses: mp.Queue = ctx.Queue()
    dropped = ctx.Event()
    worker = ctx.Process(target=_worker, args=(addresses, dropped, sys.argv[1] == "quiet"))
    worker.start()
    peer = socket.socket(socket.AF_UNIX)
    peer.connect(addresses.get(timeout=30))
    peer.close()  # gone before the authentication handshake finished
    dropped.set()
    worker.join(timeout=30)


if __name__ == "__main__":
    main()
