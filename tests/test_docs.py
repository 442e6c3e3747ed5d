"""Every command shown in README.md runs (shortened where it would train for long).

The commands run in order, one test each, as a user would type them, in a scratch folder that has the repo's
`recipes/`, `plugins/` and `nestkit/` plus a `data/` folder with manifests of the bundled demo
audio. A README command this test does not know how to run fails the test, so the README cannot
show a command nobody checked.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, TEST_PLUGINS, nestkit_executable, plugins_env, run_nestkit, run_python
from nestkit.data import demo_manifests
from nestkit.interop.nemo import nemo_config_from_recipe
from nestkit.recipe import load_recipe

# A NEST small enough for a CPU test, trained for two steps.
TINY = [
    "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1", "model.encoder.n_layers=1", "model.encoder.d_model=32",
    "model.encoder.n_heads=2", "model.encoder.subsampling_conv_channels=16",
    "model.train_ds.batch_size=4", "model.validation_ds.batch_size=4",
    "model.train_ds.num_workers=0", "model.validation_ds.num_workers=0",
]
ENV = {"OMP_NUM_THREADS": "1", "COLUMNS": "200", "NO_COLOR": "1"}


def readme_commands() -> Iterator[tuple[str, str | None]]:
    """(command, expected error line or None) for each command line of README's bash blocks."""
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        for i, line in enumerate(lines):
            if line.startswith("#"):
                continue
            following = lines[i + 1] if i + 1 < len(lines) else ""
            yield line, following[2:] if following.startswith("# error:") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def installed() -> list[str]:
    """The test plugins the README lines so far have installed."""
    return []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: the repo's recipes/plugins/package and a NeMo training config to convert
    (the manifests under data/ are what README's own commands write)."""
    work = tmp_path_factory.mktemp("readme")
    for name in ("recipes", "plugins", "nestkit"):
        (work / name).symlink_to(ROOT / name)
    recipe = load_recipe(ROOT / "recipes" / "nest_fast_conformer.yaml")
    nemo = {"name": recipe.name, "model": nemo_config_from_recipe(recipe.data),
            "trainer": {"devices": -1, "max_steps": -1, "enable_progress_bar": True},
            "exp_manager": {"exp_dir": None, "name": recipe.name}}
    (work / "nest_fast-conformer.yaml").write_text(yaml.safe_dump(nemo, sort_keys=False))
    return work


def shortened(command: str) -> list[str] | None:
    """The argv that runs ``command`` for the test, or None when there is nothing to run here."""
    argv = shlex.split(command)
    if argv[:2] == ["pip", "install"]:
        for i, arg in enumerate(argv):
            if arg == "-e":
                target = argv[i + 1].split("[")[0].strip("\"'")
                assert (ROOT / target / "pyproject.toml").exists(), f"README installs a missing package: {target}"
        return None  # installing is CI's job (.ci/run runs README's test command)
    if argv[:3] == ["python", "-m", "pytest"]:
        return None  # this is the suite itself
    if argv[0] == "nestkit" and argv[1] == "train":
        if "--devices" in argv:
            argv[argv.index("--devices") + 1] = "2"
        # A README run that asks for more steps continues the earlier one: two steps further.
        longer = ["trainer.max_steps=4"] if any(a.startswith("trainer.max_steps=") for a in argv) else []
        argv = [a for a in argv if not a.startswith("trainer.max_steps=")]
        return [*nestkit_executable(), *argv[1:3], *TINY, *argv[3:], *longer]  # README's overrides win
    if argv[0] == "torchrun":
        rest = argv[argv.index("-m"):]
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", *rest, *TINY]
    if argv[:2] == ["nestkit", "bench"]:
        keep = argv[:3]
        return [*nestkit_executable(), *keep[1:], "--device", "cpu", "--batch", "2", "--min-sec", "1",
                "--max-sec", "2", "--steps", "1", "--warmup", "1", "--precision", "32", "--no-components",
                "model.encoder.n_layers=1"]
    if argv[0] == "nestkit":
        return [*nestkit_executable(), *argv[1:]]
    raise AssertionError(f"README command not covered by tests/test_docs.py: {command}")


def plugins_installed_by(command: list[str]) -> list[str]:
    """The test plugins (tests/plugins/NAME) that ``pip install`` without ``-e`` installs."""
    if command[:2] != ["pip", "install"] or "-e" in command:
        return []
    packages = [Path(package) for package in command[2:]]
    unknown = [str(p) for p in packages if p.parent != Path("tests/plugins") or p.name not in TEST_PLUGINS]
    assert not unknown, f"README installs a package that is not a test plugin: {unknown}"
    return [p.name for p in packages]


def run(argv: list[str], cwd: Path, plugins: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV, **plugins}
    executable = nestkit_executable()
    if argv[:len(executable)] == executable:
        return run_nestkit(*argv[len(executable):], cwd=cwd, env=env, timeout=300)
    if argv[:2] == [sys.executable, "-m"]:  # torchrun
        return run_python(*argv[1:], cwd=cwd, env=env, timeout=300)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)


def check_tensorboard(logdir: Path) -> None:
    """`tensorboard --logdir nest_experiments` has runs with the training scalars to show."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_files = sorted(logdir.rglob("events.out.tfevents.*"))
    assert event_files, f"no TensorBoard event files under {logdir}"
    tags = set()
    for path in event_files:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"train_loss", "learning_rate", "val_loss"} <= tags, tags


README_COMMANDS = list(readme_commands())


@pytest.mark.slow
@pytest.mark.parametrize(("command", "expected_error"), README_COMMANDS,
                         ids=[f"{i:02d}:{' '.join(c.split()[:3])}" for i, (c, _) in enumerate(README_COMMANDS)])
def test_readme_command_runs(workdir: Path, installed: list[str], plugin_site: Path, command: str,
                             expected_error: str | None) -> None:
    """One README line. The lines run in README's order in one folder, as a user types them, so a
    command may use what an earlier one made (it fails when that one was deselected). A test plugin
    a line installs comes from the suite's one pip install of them all (conftest's plugin_site):
    the commands after it see it, those before do not."""
    for part in (p.strip() for p in command.split("&&")):
        if part.startswith("tensorboard --logdir"):
            check_tensorboard(workdir / shlex.split(part)[2])
            continue
        installed.extend(plugins_installed_by(shlex.split(part)))
        argv = shortened(part)
        if argv is None:
            continue
        result = run(argv, workdir, plugins_env(plugin_site, *installed))
        if expected_error is not None:
            assert result.returncode == 2, (part, result.stdout, result.stderr)
            assert result.stderr.strip() == expected_error, (part, result.stderr)
            continue
        assert result.returncode == 0, (part, result.stdout[-2000:], result.stderr[-3000:])
        assert "Traceback" not in result.stderr, part


@pytest.mark.slow
def test_readme_commands_leave_what_readme_says_they_make(workdir: Path) -> None:
    """After the README lines above (in this file's order): what they left behind."""
    assert len(README_COMMANDS) >= 15
    assert (workdir / "nestkit.schema.json").exists()
    assert sorted(p.name for p in (workdir / "data" / "shards").glob("audio_*.tar")) == [f"audio_{k}.tar" for k in range(8)]
    assert (workdir / "nest_experiments" / "NEST-demo" / "checkpoints" / "last.ckpt").exists()
    assert len(list((workdir / "features").glob("*.npy"))) == len(demo_manifests()[1].read_text().splitlines())
    assert (workdir / "data" / "train.json").exists() and (workdir / "data" / "train_val.json").exists()
    assert torch.load(workdir / "encoder.pt", weights_only=True)["encoder_state_dict"]
    assert (workdir / "demo.nemo").exists() and (workdir / "demo.ckpt").exists()
    assert load_recipe(workdir / "my_recipe.yaml").data["model"]["encoder"]["n_layers"] == 17


def _environment_table() -> set[str]:
    """The variable names in README's "Environment variables" table."""
    section = (ROOT / "README.md").read_text().split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_every_nestkit_environment_variable_is_in_the_readme_table() -> None:
    in_code = {name for path in (ROOT / "nestkit").rglob("*.py")
               for name in re.findall(r"\bNESTKIT_[A-Z0-9_]+\b", path.read_text())}
    documented = _environment_table()
    assert {"NESTKIT_DEBUG", "NESTKIT_DIST_TIMEOUT", "NESTKIT_TRACE_PLUGINS"} <= in_code  # the scan finds them
    assert sorted(in_code - documented) == [], "add these to README's Environment variables table"
    assert sorted(n for n in documented - in_code if n.startswith("NESTKIT_")) == [], "README lists variables nestkit no longer reads"
