"""The experiment folder ``exp_dir/name/`` (recipe.yaml, tensorboard/, checkpoints/) and the lock
that lets one run at a time use it.

Nothing is written to the folder before the model has been built and a resume has succeeded:
a run that cannot start leaves the experiment as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestkit.errors import CheckpointError, NestkitError
from nestkit.files import replace_text

DEFAULT_ROOT = "nest_experiments"


def _unwritable(folder: Path, exc: OSError) -> CheckpointError:
    return CheckpointError(f"cannot write to the experiment folder {folder}: {exc.strerror or exc} "
                           "(set exp_manager.exp_dir to a writable folder)")


@dataclass(frozen=True)
class Experiment:
    folder: Path

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.folder / "tensorboard"

    @property
    def recipe_file(self) -> Path:
        return self.folder / "recipe.yaml"

    @property
    def skipped_file(self) -> Path:
        return self.folder / "skipped_items.txt"

    @classmethod
    def of(cls, recipe: Any) -> Experiment:
        exp = recipe.exp_manager
        root = Path(exp.exp_dir) if exp.exp_dir else Path(DEFAULT_ROOT)
        return cls((root / (exp.name or recipe.name)).absolute())

    def make_folders(self) -> list[Path]:
        """The folder and checkpoints/; those made here now, outermost first."""
        missing = [p for p in (*reversed(self.checkpoints.parents), self.checkpoints) if not p.exists()]
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritable(self.folder, exc) from None
        return missing

    @contextlib.contextmanager
    def claimed(self, main: bool, say: Any) -> Iterator[None]:
        """The folder made and locked by rank 0 while the block runs; afterwards unlocked, and the
        folders made for it removed again if nothing was written into them (a run that could not
        start leaves no empty experiment behind)."""
        lock, made = RunLock(self.folder), []
        if main:
            made = self.make_folders()
            lock.acquire(say)
        try:
            yield
        finally:
            lock.release()
            for folder in reversed(made):
                with contextlib.suppress(OSError):  # not empty: something was written, keep it
                    folder.rmdir()

    def write_recipe(self, text: str) -> None:
        """The resolved recipe, replaced atomically."""
        self.write_text(self.recipe_file, text)

    def write_text(self, path: Path, text: str) -> None:
        """A file of the folder, replaced atomically."""
        try:
            replace_text(path, text)
        except OSError as exc:
            raise _unwritable(self.folder, exc) from None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (unknown counts as alive)."""
    if os.name == "nt":  # signal 0 means CTRL_C_EVENT there: never probe
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class RunLock:
    """One run per experiment folder: rank 0 holds ``folder/.lock`` (host, pid, start time) while
    it trains; the other ranks of a DDP run share it. A lock left by a dead process of this host
    is taken over with a note."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.mine = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.held = False

    def acquire(self, say: Any) -> None:
        for _ in range(3):  # a takeover races another takeover at most a couple of times
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue
                if holder.get("host") == self.mine["host"] and not process_alive(int(holder.get("pid", -1))):
                    say(f"note: took over the lock of a run that is gone (pid {holder.get('pid')}, started {holder.get('started')})")
                    self.path.unlink(missing_ok=True)
                    continue
                raise NestkitError(
                    f"{self.path.parent} is in use by another run (pid {holder.get('pid')} on {holder.get('host')}, "
                    f"started {holder.get('started')}); wait for it, stop it, or set another exp_manager.name")
            except OSError as exc:
                raise _unwritable(self.path.parent, exc) from None
            with os.fdopen(fd, "w") as handle:
                json.dump(self.mine, handle)
            self.held = True
            return
        raise NestkitError(f"could not take the lock {self.path}; remove it if no run uses this folder")

    def _holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return None  # released meanwhile: try again
        except (OSError, ValueError):
            return {"pid": "?", "host": "?", "started": "?"}

    def release(self) -> None:
        if self.held and self._holder() == self.mine:
            self.path.unlink(missing_ok=True)
        self.held = False
