"""Test-only fault injection, switched on by environment variables (never set in normal use).

- ``NESTKIT_FAULT_NONFINITE_STEPS=3,4``: the loss of those steps (1-based) becomes NaN.
- ``NESTKIT_FAULT_KILL_AFTER_CHECKPOINT=k``: the process SIGKILLs itself right after the
  checkpoint of step ``k`` is written (a hard crash, for resume tests).
- ``NESTKIT_TRACE_DIR=folder``: each rank appends the manifest indices of its training batches
  to ``rank<r>_indices.txt`` and saves its final weights to ``rank<r>_final.pt`` (DDP tests).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _steps(text: str) -> frozenset[int]:
    return frozenset(int(p) for p in text.replace(" ", "").split(",") if p)


@dataclass(frozen=True)
class Faults:
    nonfinite_steps: frozenset[int] = frozenset()
    kill_after_checkpoint: int | None = None
    trace_dir: Path | None = None

    @classmethod
    def from_env(cls) -> Faults:
        kill = os.environ.get("NESTKIT_FAULT_KILL_AFTER_CHECKPOINT")
        return cls(
            nonfinite_steps=_steps(os.environ.get("NESTKIT_FAULT_NONFINITE_STEPS", "")),
            kill_after_checkpoint=int(kill) if kill else None,
            trace_dir=Path(os.environ["NESTKIT_TRACE_DIR"]) if os.environ.get("NESTKIT_TRACE_DIR") else None,
        )

    def nonfinite(self, step: int) -> bool:
        return step in self.nonfinite_steps

    def after_checkpoint(self, step: int) -> None:
        if self.kill_after_checkpoint is not None and step == self.kill_after_checkpoint:
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))  # no SIGKILL on Windows

    def trace_batch(self, rank: int, batch: Any) -> None:
        if self.trace_dir is not None:
            with open(self.trace_dir / f"rank{rank}_indices.txt", "a") as handle:
                handle.write(" ".join(str(i) for i in batch.indices.tolist()) + "\n")

    def trace_final(self, rank: int, state: dict[str, Any]) -> None:
        if self.trace_dir is not None:
            import torch

            torch.save(state, self.trace_dir / f"rank{rank}_final.pt")
