"""Fault scenarios against real `nestkit train` processes (tiny model, bundled demo data).

Every run is a subprocess of the real executable with a bounded lifetime. The scenarios
return plain results so the tests assert on them and the report script counts them.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from _train_recipe import tiny_recipe  # noqa: E402
from conftest import FRESH_PROCESSES, ZYGOTE, nestkit_executable  # noqa: E402
from nestkit.errors import CheckpointError  # noqa: E402
from nestkit.train.checkpoint import load_checkpoint  # noqa: E402

MAX_STEPS = 8
RUN_TIMEOUT_S = 180.0
ENV = {"OMP_NUM_THREADS": "1", "COLUMNS": "200", "NO_COLOR": "1"}
_RESUMED = re.compile(r"resumed from (\S+) at step (\d+)")


def write_recipe(folder: Path, exp_dir: Path, **trainer: Any) -> Path:
    """The tiny recipe, checkpointing after every step, one progress line per step."""
    settings = {"max_steps": MAX_STEPS, "log_every_n_steps": 1, "val_check_interval": 100000, **trainer}
    data = tiny_recipe(exp_dir, exp={"checkpoint_callback_params": {"every_n_train_steps": 1}}, **settings)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def checkpoints(exp_dir: Path, name: str) -> Path:
    return exp_dir / name / "checkpoints"


class Training:
    """One `nestkit train` subprocess whose stdout is read by a thread (so the caller can poll)."""

    def __init__(self, recipe: Path, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        argv = ["train", str(recipe), f"exp_manager.name={name}", *args]
        full_env = {**os.environ, **ENV, **(env or {})}
        if FRESH_PROCESSES:
            self.proc: Any = subprocess.Popen([*nestkit_executable(), *argv], cwd=ROOT, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
        else:  # forked from the test worker's zygote (tests/_zygote.py)
            self.proc = ZYGOTE.popen(["nestkit", *argv], full_env, ROOT, stdout=True, stderr=True)
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        self._err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self._err), daemon=True)]
        for t in self._readers:
            t.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        with stream:
            for line in stream:
                with self._new_line:
                    into.append(line)
                    self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def wait_for_line(self, prefix: str, timeout: float = RUN_TIMEOUT_S) -> bool:
        """Block until a stdout line starts with ``prefix``; False if the process ended first."""
        deadline = time.monotonic() + timeout
        with self._new_line:
            while not any(line.startswith(prefix) for line in self.lines):
                if self.proc.poll() is not None and not self._readers[0].is_alive():
                    return False
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no line starting with {prefix!r} after {timeout} s")
                self._new_line.wait(0.05)
        return True

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> tuple[int, str, str]:
        """(exit code, stdout, stderr); kills the process tree if it outlives ``timeout``."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc.pid)
            self.proc.wait(timeout=30)
            raise
        for t in self._readers:
            t.join(timeout=10)
        return self.proc.returncode, "".join(self.lines), "".join(self._err)


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(c) for c in handle.read().split()]
    except OSError:
        pass
    return found


def descendants(pid: int) -> list[int]:
    out = []
    for child in children(pid):
        out += [child, *descendants(child)]
    return out


def kill_tree(pid: int) -> None:
    for p in [*descendants(pid), pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def env_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as handle:
        pairs = [item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def run_to_end(recipe: Path, name: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return Training(recipe, name, *args, env=env).finish()


def model_of(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Keys whose tensors differ (empty list: bit-identical)."""
    if a.keys() != b.keys():
        return sorted(set(a) ^ set(b)) or ["<key order>"]
    return [k for k in a if not torch.equal(a[k], b[k])]


def survey(folder: Path) -> tuple[dict[str, int], list[str], list[str]]:
    """({checkpoint name: step} of readable ones, unreadable names, leftover temporary files)."""
    readable, unreadable, temporary = {}, [], []
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if ".tmp" in path.name:
                temporary.append(path.name)
            elif path.suffix == ".ckpt":
                try:
                    readable[path.name] = int(load_checkpoint(path)["step"])
                except CheckpointError:
                    unreadable.append(path.name)
    return readable, unreadable, temporary


@dataclass
class KillResult:
    """One SIGKILL-then-resume run."""

    kill_point: str
    killed: bool = False
    readable: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    resumed_from: int | None = None
    resume_rc: int | None = None
    differing: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def newest_intact(self) -> int:
        return max(self.readable.values(), default=0)

    @property
    def data_lost(self) -> bool:
        """A checkpoint the kill damaged, or a resumed run that does not reproduce the baseline."""
        return bool(self.unreadable) or self.resume_rc != 0 or bool(self.differing)

    @property
    def survived(self) -> bool:
        return self.resume_rc == 0 and not self.differing and not self.unreadable


def _kill_when_temporary_appears(run: Training, folder: Path, which: str, deadline: float) -> bool:
    """Poll (tight loop) for a checkpoint temporary file (``which`` in its name); SIGKILL on sight."""
    while time.monotonic() < deadline and run.proc.poll() is None:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            names = []
        if any(".tmp" in n and which in n for n in names):
            os.kill(run.proc.pid, signal.SIGKILL)
            return True
    return False


def kill_and_resume(recipe: Path, exp_dir: Path, baseline: dict[str, torch.Tensor], seed: int,
                    mode: str | None = None, which: str | None = None) -> KillResult:
    """SIGKILL a run at a seeded random point (``mode`` "step": a random delay after a
    random step's progress line; "write": the moment a checkpoint temporary file appears), check every checkpoint left, resume to the end and
    compare the final weights with ``baseline`` (an uninterrupted run)."""
    rng = random.Random(seed)
    mode = mode or rng.choice(["step", "step", "write"])
    name = f"kill{seed}-{mode}"
    folder = checkpoints(exp_dir, name)
    shutil.rmtree(exp_dir / name, ignore_errors=True)
    # A write kill may hit the final step's checkpoints too; a step kill needs a step still to come.
    step = rng.randint(1, MAX_STEPS if mode == "write" else MAX_STEPS - 1)
    run = Training(recipe, name)
    try:
        if mode == "step":
            delay = rng.uniform(0.0, 0.15)  # a step takes about 0.1 s: anywhere in the next one or two
            result = KillResult(f"{delay:.2f} s after 'step {step}/'")
            if run.wait_for_line(f"step {step}/"):
                time.sleep(delay)
                if run.proc.poll() is None:
                    os.kill(run.proc.pid, signal.SIGKILL)
        else:
            which = which or rng.choice(["step=", "last.ckpt"])
            result = KillResult(f"while writing {which} after 'step {step}/'")
            if run.wait_for_line(f"step {step}/"):
                _kill_when_temporary_appears(run, folder, which, time.monotonic() + 60)
        rc, _, _ = run.finish()
    except BaseException:
        kill_tree(run.proc.pid)
        raise
    result.killed = rc == -signal.SIGKILL
    result.readable, result.unreadable, result.leftovers = survey(folder)
    rc, out, err = run_to_end(recipe, name)
    result.resume_rc = rc
    match = _RESUMED.search(out)
    result.resumed_from = int(match.group(2)) if match else (0 if rc == 0 else None)
    if rc != 0:
        result.detail = err.strip().splitlines()[-1] if err.strip() else f"exit {rc}"
        return result
    result.differing = same_weights(baseline, model_of(folder / "last.ckpt"))
    return result


@dataclass
class CrashResult:
    """How a run ended after one of its processes was SIGKILLed."""

    rc: int | None
    seconds: float  # from the kill to the exit of the whole run
    stdout: str
    stderr: str
    survivors: list[int]  # processes of the run still alive after it exited
    hung: bool

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _crash(run: Training, victim: int, bound_s: float, also: list[int] | None = None) -> CrashResult:
    """SIGKILL ``victim``, then wait for the run to end; ``also`` are processes of the run that
    are not below it in the process tree (DDP ranks forked by the test zygote)."""
    tree = [*descendants(run.proc.pid), *(also or [])]
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    hung = False
    try:
        run.proc.wait(timeout=bound_s)
    except subprocess.TimeoutExpired:
        hung = True
        kill_tree(run.proc.pid)
        for p in also or []:
            kill_tree(p)
    seconds = time.monotonic() - t0
    rc, out, err = run.finish(timeout=30)
    deadline = time.monotonic() + 10  # orphans get a moment to notice
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.1)
    survivors = [p for p in tree if alive(p)]
    for p in survivors:
        os.kill(p, signal.SIGKILL)
    return CrashResult(None if hung else rc, seconds, out, err, survivors, hung)


def kill_data_worker(recipe: Path, name: str, bound_s: float = 60.0) -> CrashResult:
    """Train with two loader workers and SIGKILL one of them after step 3."""
    run = Training(recipe, name, "model.train_ds.num_workers=2", "trainer.max_steps=1000")
    try:
        if not run.wait_for_line("step 3/"):
            raise RuntimeError(f"run ended before step 3: {run.finish()}")
        workers = children(run.proc.pid)
        if len(workers) != 2:
            raise RuntimeError(f"expected 2 loader workers under {run.proc.pid}, found {workers}")
        return _crash(run, workers[0], bound_s)
    except BaseException:
        kill_tree(run.proc.pid)
        raise


def kill_ddp_rank(recipe: Path, name: str, rank: int = 1, bound_s: float = 90.0) -> CrashResult:
    """`nestkit train --devices 2` (gloo on the CPU); SIGKILL rank ``rank`` after step 3.

    torchrun starts each rank as ``$PYTHON_EXEC``: the test zygote's stand-in, which has the
    zygote fork the rank and dies with it (tests/_zygote.py). Killing rank 1's stand-in is what
    torchrun sees of a dead rank, and the zygote SIGKILLs the rank itself at once. The forked
    ranks, children of the zygote, count among the run's processes that must all be gone."""
    run = Training(recipe, name, "--devices", "2", "trainer.max_steps=1000")
    try:
        if not run.wait_for_line("step 3/"):
            raise RuntimeError(f"run ended before step 3: {run.finish()}")
        ranks = {env_of(p).get("RANK"): p for p in descendants(run.proc.pid) if "RANK" in env_of(p)}
        if str(rank) not in ranks:
            raise RuntimeError(f"no rank {rank} among {ranks}")
        forked = [] if FRESH_PROCESSES else [p for p in children(ZYGOTE.pid) if p != run.proc.pid]
        if not FRESH_PROCESSES and len(forked) != len(ranks):
            raise RuntimeError(f"expected {len(ranks)} ranks forked by the zygote, found {forked}")
        forked += [q for p in forked for q in descendants(p)]
        return _crash(run, ranks[str(rank)], bound_s, also=forked)
    except BaseException:
        kill_tree(run.proc.pid)
        raise


def stop_with_signal(recipe: Path, name: str, sig: signal.Signals, *args: str, after_step: int = 3) -> tuple[int, str, str]:
    """Send ``sig`` to a run (``args``: more of its command line) once it printed step
    ``after_step``; (exit code, stdout, stderr)."""
    run = Training(recipe, name, *args)
    try:
        if not run.wait_for_line(f"step {after_step}/"):
            raise RuntimeError(f"run ended before step {after_step}: {run.finish()}")
        os.kill(run.proc.pid, sig)
        return run.finish(timeout=60)
    except BaseException:
        kill_tree(run.proc.pid)
        raise


def try_mount_tmpfs(folder: Path, size: str) -> str | None:
    """Mount a small tmpfs at ``folder``; None on success, else why it is not possible."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "not root"
    mount = shutil.which("mount")
    if mount is None:
        return "no mount command"
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True, timeout=30)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exit {done.returncode}")


def unmount(folder: Path) -> None:
    subprocess.run([shutil.which("umount") or "umount", str(folder)], capture_output=True, timeout=30)
