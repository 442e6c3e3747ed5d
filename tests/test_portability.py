"""Portability: every nestkit module imports, and the CLI runs, where POSIX-only modules and
signals do not exist (Windows: no ``resource``, ``fcntl``, ``pwd``, ``grp``, ``termios``, and no
SIGCHLD, SIGKILL, SIGALRM, SIGUSR1, ...). Simulated on this machine in a process forked from the
test zygote (tests/_zygote.py): nestkit's own modules are dropped there, what Windows lacks is made
unavailable, and then every nestkit module is imported anew."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import RECIPES, ROOT, run_python

BLOCKED_MODULES = ("resource", "fcntl", "pwd", "grp", "termios")
WINDOWS_SIGNALS = ("SIGABRT", "SIGBREAK", "SIGFPE", "SIGILL", "SIGINT", "SIGSEGV", "SIGTERM")
# Modules that still need a fix by their owner; each must fail today (an entry that passes fails the test).
EXPECTED_TO_FAIL: dict[str, str] = {}

# Runs first in the child: nestkit is forgotten (the zygote imported it), and what Windows lacks is
# made unavailable before nestkit is imported again. The third-party modules the zygote preloaded
# stay: how they run on Windows is theirs to answer; every nestkit import runs under the block.
BLOCKER = f"""
import signal, sys
for _name in [n for n in sys.modules if n == "nestkit" or n.startswith("nestkit.")]:
    del sys.modules[_name]
for _name in {BLOCKED_MODULES!r}:
    sys.modules[_name] = None  # `import {{name}}` now raises ImportError
for _name in [n for n in dir(signal) if n.startswith("SIG") and not n.startswith("SIG_") and n not in {WINDOWS_SIGNALS!r}]:
    delattr(signal, _name)
"""


def nestkit_modules() -> list[str]:
    package = ROOT / "nestkit"
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


# The three checks share one process; each reports into its own key of one JSON line and the tests
# below assert on their key.
CHECKS = """
import contextlib, importlib, io, json, traceback
report = {}
modules, checkpoint, recipe = json.loads(sys.argv[1])
failures = {}
for module in modules:
    try:
        importlib.import_module(module)
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, by module
        failures[module] = f"{type(exc).__name__}: {exc}"
report["imports"] = failures
try:
    import torch
    from nestkit.train.atomic_write import atomic_save
    from nestkit.train.checkpoint import load_checkpoint
    atomic_save({"format": "nestkit-checkpoint", "version": 1, "model": {"w": torch.ones(2)}, "step": 3}, checkpoint)
    report["checkpoint"] = {"step": load_checkpoint(checkpoint)["step"]}
except BaseException:  # noqa: BLE001
    report["checkpoint"] = {"error": traceback.format_exc()}
out, err = io.StringIO(), io.StringIO()
code = 0
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    from nestkit.cli.main import main
    sys.argv = ["nestkit", "validate", recipe, "-q"]
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    except BaseException:  # noqa: BLE001
        code, _ = 1, traceback.print_exc()
report["cli"] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def windows_like(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the three checks saw in a fresh interpreter without POSIX-only modules and signals."""
    checkpoint = tmp_path_factory.mktemp("portability") / "a.ckpt"
    work = json.dumps([nestkit_modules(), str(checkpoint), str(RECIPES / "nest_demo.yaml")])
    result = run_python("-c", BLOCKER + CHECKS, work, env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_module_imports_without_posix_only_modules_and_signals(windows_like: dict[str, Any]) -> None:
    modules = nestkit_modules()
    assert "nestkit.train.checkpoint" in modules and "nestkit.cli.main" in modules
    failures = windows_like["imports"]
    unexpected = {m: why for m, why in failures.items() if m not in EXPECTED_TO_FAIL}
    assert not unexpected, "modules that need a POSIX-only module or signal at import: " + "; ".join(
        f"{m} ({why})" for m, why in unexpected.items())
    fixed = [m for m in EXPECTED_TO_FAIL if m not in failures]
    assert not fixed, f"now import fine, remove from EXPECTED_TO_FAIL: {fixed}"


def test_checkpoint_writes_degrade_without_sigchld(windows_like: dict[str, Any]) -> None:
    """atomic_save defers SIGCHLD where it exists; where it does not, it simply writes."""
    assert windows_like["checkpoint"] == {"step": 3}


def test_cli_runs_without_posix_only_modules(windows_like: dict[str, Any]) -> None:
    cli = windows_like["cli"]
    assert cli["code"] == 0, cli["stderr"][-3000:]
    assert cli["stdout"].strip().splitlines()[-1] == f"ok {RECIPES / 'nest_demo.yaml'}"
