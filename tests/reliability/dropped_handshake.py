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
import time
from multiprocessing import resource_sharer

from nestkit.data.workers import worker_init as _worker_init


def _worker(addresses: mp.Queue, quiet: bool) -> None:
    if quiet:
        _worker_init(0)
    read_end, _ = os.pipe()
    resource_sharer.DupFd(read_end)  # what sending a tensor's fd does: starts the sharing thread
    addresses.put(resource_sharer._resource_sharer._address)  # type: ignore[attr-defined]
    time.sleep(1.0)


def main() -> None:
    ctx = mp.get_context("fork")
    addresses: mp.Queue = ctx.Queue()
    worker = ctx.Process(target=_worker, args=(addresses, sys.argv[1] == "quiet"))
    worker.start()
    peer = socket.socket(socket.AF_UNIX)
    peer.connect(addresses.get(timeout=30))
    peer.close()  # gone before the authentication handshake finished
    worker.join(timeout=30)


if __name__ == "__main__":
    main()
