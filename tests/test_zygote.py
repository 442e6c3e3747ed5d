"""The test zygote's stand-in for ``python`` (tests/_zygote.py), which the DDP tests' ranks run
through: it must behave like the interpreter it replaces, or those tests prove nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import ZYGOTE
from reliability.training import alive

# argv to stderr before the pid to stdout: once the test has read the pid, stderr holds the argv
SLEEPER = "import os, sys, time; print(sys.argv[1:], file=sys.stderr, flush=True); print(os.getpid(), flush=True); time.sleep(120)"


def _start(tmp_path: Path, code: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """The stand-in running ``python -u -c code args`` (as torchrun starts a rank); its forked pid."""
    proc = subprocess.Popen([ZYGOTE.python_exec, "-u", "-c", code, *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "MARK": "42"})
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_exit_status_streams_folder_and_environment_pass_through(tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd(), os.environ['MARK'], sys.argv[1:]); sys.exit(7)"
    done = subprocess.run([ZYGOTE.python_exec, "-u", "-c", code, "a", "b"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "MARK": "42"}, timeout=60)
    assert done.returncode == 7, done.stderr
    assert done.stdout.split(" ", 2) == [str(tmp_path), "42", "['a', 'b']\n"]


def test_a_signal_reaches_the_forked_process_and_its_death_is_reported_as_such(tmp_path: Path) -> None:
    proc, pid = _start(tmp_path, SLEEPER, "x")
    assert pid != proc.pid and alive(pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert proc.stderr is not None and proc.stderr.read() == "['x']\n"
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_killing_the_stand_in_kills_what_it_stood_for(tmp_path: Path) -> None:
    proc, pid = _start(tmp_path, SLEEPER)
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_poll_sees_an_exit_without_a_wait(tmp_path: Path) -> None:
    child = ZYGOTE.spawn(["python", "-c", "raise SystemExit(3)"], dict(os.environ), tmp_path, os.devnull, os.devnull,
                         os.devnull)
    deadline = time.monotonic() + 30
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.poll() == 3
