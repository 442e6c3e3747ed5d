"""Checkpoint files: safe loading, which ones to keep, and which one a run resumes from.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so
``torch.load(weights_only=True)`` reads it and no code runs on load. Every checkpoint is written
by ``atomic_save`` (atomic_write.py): a crash or a full disk mid-write leaves the previous file
untouched.
"""

from __future__ import annotations

import re
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nestkit.errors import CheckpointError
from nestkit.train.atomic_write import atomic_save, reason

FORMAT = "nestkit-checkpoint"
VERSION = 1
LAST = "last.ckpt"
_BEST = re.compile(r"^best-step=(\d+)-val_loss=([-+0-9.eEinfa]+)\.ckpt$")


def read_tensors(path: Path, what: str) -> Any:
    """``torch.load`` of ``path`` on the CPU without running any code from it; a file that does not
    load is one line, saying what it is when it is a .nemo archive or a recipe (``what``: the
    kind of file expected: "checkpoint")."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unreadable file is the same user-facing error
        a_what = f"{'an' if what[0] in 'aeiou' else 'a'} {what}"
        if path.suffix == ".nemo" or (tarfile.is_tarfile(path) and "model_config.yaml" in _tar_names(path)):
            raise CheckpointError(f"{path} is a .nemo archive, not {a_what}: convert it with "
                                  f"`nestkit import-nemo {path} OUT.ckpt` and use OUT.ckpt") from None
        if path.suffix in (".yaml", ".yml"):
            raise CheckpointError(f"{path} is a recipe, not {a_what}") from None
        raise CheckpointError(f"{path} is not a readable {what} (corrupt or truncated?): {reason(exc)}") from None


def _tar_names(path: Path) -> list[str]:
    try:
        with tarfile.open(path) as tar:
            return [name.removeprefix("./") for name in tar.getnames()]
    except (tarfile.TarError, OSError):
        return []


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a nestkit checkpoint on the CPU without running any code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    state = read_tensors(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise CheckpointError(f"{path} is not a nestkit checkpoint (no '{FORMAT}' header)")
    return state


@dataclass
class CheckpointKeeper:
    """Decides file names and keeps the best ``save_top_k`` by validation loss, plus ``last``."""

    folder: Path
    save_top_k: int = 1
    mode: str = "min"

    @classmethod
    def of(cls, folder: Path, exp_cfg: Any) -> CheckpointKeeper | None:
        """The keeper ``exp_manager`` asks for (None with ``create_checkpoint_callback: false``)."""
        if not exp_cfg.create_checkpoint_callback:
            return None
        params = exp_cfg.checkpoint_callback_params
        return cls(folder, save_top_k=params.save_top_k, mode=params.mode)

    def best(self) -> list[tuple[float, int, Path]]:
        """(val_loss, step, path) of the kept best checkpoints, best first."""
        found = []
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                match = _BEST.match(path.name)
                if match:
                    found.append((float(match.group(2)), int(match.group(1)), path))
        found.sort(key=lambda t: (t[0] if self.mode == "min" else -t[0], t[1]))
        return found

    @property
    def last(self) -> Path:
        return self.folder / LAST

    def step_path(self, step: int) -> Path:
        return self.folder / f"step={step:08d}.ckpt"

    def save(self, state: dict[str, Any], step: int, val_loss: float | None, every_n: bool) -> Path:
        """Write ``state``: as a step file when ``every_n``, among the best when it ranks, and as last.ckpt."""
        if every_n:
            self.save_step(state, step)
        if val_loss is not None:
            self.save_best(state, step, val_loss)
        return self.save_last(state)

    def save_last(self, state: dict[str, Any]) -> Path:
        atomic_save(state, self.last)
        return self.last

    def save_step(self, state: dict[str, Any], step: int) -> Path:
        path = self.step_path(step)
        atomic_save(state, path)
        return path

    def save_best(self, state: dict[str, Any], step: int, val_loss: float) -> Path | None:
        """Keep ``state`` when it ranks among the best ``save_top_k``; drop the ones it displaces."""
        if self.save_top_k == 0 or val_loss != val_loss:  # NaN never ranks
            return None
        kept = self.best()
        key = val_loss if self.mode == "min" else -val_loss
        if self.save_top_k > 0 and len(kept) >= self.save_top_k:
            worst = kept[self.save_top_k - 1]
            if key >= (worst[0] if self.mode == "min" else -worst[0]):
                return None
        path = self.folder / f"best-step={step:08d}-val_loss={val_loss:.6g}.ckpt"
        atomic_save(state, path)
        if self.save_top_k > 0:
            for _, _, old in self.best()[self.save_top_k:]:
                old.unlink(missing_ok=True)
        return path


_STEP_IN_NAME = re.compile(r"^(?:best-)?step=(\d+)[-.]")


def find_resume(folder: Path) -> tuple[Path, dict[str, Any], list[str]] | None:
    """The newest intact checkpoint of ``folder``: (path, state, why others were unreadable);
    None when there is none at all, an error when every one is damaged (never a silent restart).

    ``last.ckpt`` is usually it, but a kill between writing ``step=N.ckpt`` and ``last.ckpt``
    leaves a newer step file, and a damaged ``last.ckpt`` must not stop a run that has intact
    older ones: every candidate newer than what loaded is tried, newest first.
    """
    if not folder.is_dir():
        return None
    for stale in folder.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)  # a write cut short by a crash; the file it meant to replace is intact
    damaged: list[str] = []

    def attempt(path: Path) -> dict[str, Any] | None:
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            damaged.append(str(err))
            return None

    best: tuple[Path, dict[str, Any]] | None = None
    last = folder / LAST
    if last.is_file():
        state = attempt(last)
        if state is not None:
            best = (last, state)
    numbered = []
    for path in folder.glob("*.ckpt"):
        match = _STEP_IN_NAME.match(path.name)
        if match:
            numbered.append((int(match.group(1)), path))
    for step, path in sorted(numbered, reverse=True):
        if best is not None and step <= int(best[1].get("step", 0)):
            break
        state = attempt(path)
        if state is not None:
            best = (path, state)
            break
    if best is None and damaged:
        raise CheckpointError(f"{damaged[0]}; no intact checkpoint to resume from (move the damaged files away to start fresh)")
    return (*best, damaged) if best is not None else None
