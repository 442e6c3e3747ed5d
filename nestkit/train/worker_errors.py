"""Each error of a multi-process run printed once: workers started by ``nestkit train --devices N``
leave their one-line errors in a folder; rank 0 prints its own, and the launcher prints what the
other ranks said differently. Torch-free: the CLI's error path imports it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

ERRORS_ENV = "NESTKIT_ERROR_DIR"  # set by the launcher for its workers
LAUNCHED_ENV = "NESTKIT_LAUNCHED"  # set for workers started by ``nestkit train --devices N``


def record(lines: list[str]) -> bool:
    """In a worker: leave ``lines`` for the launcher. True when this rank must not print them
    itself (every rank but 0)."""
    folder = os.environ.get(ERRORS_ENV)
    if not folder or not os.environ.get(LAUNCHED_ENV):
        return False
    rank = int(os.environ.get("RANK", 0))
    with contextlib.suppress(OSError):
        (Path(folder) / f"rank{rank}.txt").write_text("\n".join(lines) + "\n")
    return rank != 0


def print_unseen(folder: Path) -> None:
    """The lines of ranks other than 0 that rank 0 did not print, each once."""
    seen = set(_lines(folder / "rank0.txt"))
    for path in sorted(folder.glob("rank*.txt")):
        for line in _lines(path):
            if line not in seen:
                seen.add(line)
                print(line, file=sys.stderr)


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []
