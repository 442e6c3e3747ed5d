"""Shared test helpers: run the real `nestkit` executable, locate reference fixtures."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from _zygote import Zygote

# One torch thread per test process: the suite runs one worker per core (pytest -n auto), and the
# training runs it starts inherit this, so workers do not oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def nestkit_executable() -> list[str]:
    exe = shutil.which("nestkit")
    return [exe] if exe else [sys.executable, "-m", "nestkit.cli.main"]


ZYGOTE = Zygote()  # forks this worker's nestkit processes (tests/_zygote.py)
FRESH_PROCESSES = os.environ.get("NESTKIT_TEST_FRESH", "") not in ("", "0")


def run_nestkit(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300, fresh: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``nestkit ARGS`` as a separate process (bounded in time) and capture its output. The
    process is forked from a zygote that has imported torch already (tests/_zygote.py), unless
    ``fresh`` (or NESTKIT_TEST_FRESH=1) asks for a new interpreter."""
    return _run(["nestkit", *args], [*nestkit_executable(), *args], env, cwd, timeout, fresh)


def run_python(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300, fresh: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` (a script, ``-m module`` or ``-c code``) like ``run_nestkit``."""
    return _run(["python", *args], [sys.executable, *args], env, cwd, timeout, fresh)


def _run(argv: list[str], command: list[str], env: dict[str, str] | None, cwd: Path | None, timeout: float,
         fresh: bool) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    if fresh or FRESH_PROCESSES:
        return subprocess.run(command, capture_output=True, text=True, env=full_env, cwd=cwd or ROOT,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="nestkit-run-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        out.touch()
        err.touch()
        child = ZYGOTE.spawn(argv, full_env, cwd or ROOT, os.devnull, str(out), str(err))
        try:
            rc = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text()) from None
        return subprocess.CompletedProcess(command, rc, out.read_text(), err.read_text())


def pip_install_copies(target: Path, *packages: Path) -> None:
    """``pip install --target target`` of copies of ``packages``: building in the source folder
    writes build/ and *.egg-info there, which two test workers (pytest -n) must not share."""
    sources = target.parent / f"{target.name}-sources"
    copies = [shutil.copytree(package, sources / package.name, ignore=shutil.ignore_patterns("build", "*.egg-info"))
              for package in packages]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         *(str(copy) for copy in copies)],
        check=True, timeout=300, capture_output=True,
    )


TEST_PLUGINS = ("toy", "broken", "tiny_lstm", "clash")  # tests/plugins/NAME, entry point NAME


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test plugin packages (TEST_PLUGINS), installed by one pip call into a folder that
    subprocesses put on PYTHONPATH: real distributions with real entry points. A test sees the
    ones it names through ``plugins_env``. Installed once per test run: the xdist workers of one
    run share the folder above their own."""
    run_folder = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_folder = run_folder.parent  # pytest-N/popen-gwK -> pytest-N, this run's alone
    target = run_folder / "plugin_site"
    with open(run_folder / "plugin_site.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits for the install, then reuses it
        if not (target / ".installed").exists():
            shutil.rmtree(target, ignore_errors=True)
            shutil.rmtree(run_folder / "plugin_site-sources", ignore_errors=True)
            target.mkdir()
            pip_install_copies(target, *(ROOT / "tests" / "plugins" / name for name in TEST_PLUGINS))
            (target / ".installed").touch()
    return target


def plugins_env(site: Path, *enabled: str) -> dict[str, str]:
    """The environment of a process that sees only the ``enabled`` test plugins of ``site``."""
    assert set(enabled) <= set(TEST_PLUGINS), enabled
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])),
            "NESTKIT_DISABLE_PLUGINS": ",".join(name for name in TEST_PLUGINS if name not in enabled)}
