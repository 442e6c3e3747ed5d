"""Where a command may write its output: never over one of its inputs, and never into a training
run's ``checkpoints/`` folder, which training reads to resume and prunes (an export there was
taken for the run's newest state, and the run's real state was lost)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nestkit.errors import NestkitError


def check_outputs(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    """Raise a one-line error for an output path that would destroy an input or a run's checkpoint."""
    for out in outputs:
        where = Path(out).resolve()
        for source in inputs:
            if where == Path(source).resolve():
                raise NestkitError(f"{out} is also the input: writing it would destroy {source}; name another output file")
        folder = where.parent
        if folder.name == "checkpoints" and any((folder.parent / name).exists() for name in ("recipe.yaml", ".lock")):
            raise NestkitError(f"{out} is in the checkpoints folder of the training run {folder.parent}, which training "
                               "resumes from and prunes; write it elsewhere")
