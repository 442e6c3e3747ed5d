"""Every recipe error is one line on stderr with exit code 2, through the real executable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import run_nestkit
from nestkit.errors import RecipeError

DEMO = "recipes/nest_demo.yaml"


def one_error_line(result) -> str:  # noqa: ANN001
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.encoder.n_heads=eight", f"error: {DEMO}: model.encoder.n_heads: expected an integer, got 'eight'"),
        (
            "model.encoder.name=fast_conformr",
            f"error: {DEMO}: model.encoder.name: unknown encoder 'fast_conformr'; did you mean 'fast_conformer'? (installed: ",
        ),
        ("model.encoder.n_layer=3", f"error: {DEMO}: model.encoder: unknown field 'n_layer'; did you mean 'n_layers'?"),
        ("model.encodr.n_layers=3", f"error: {DEMO}: override 'model.encodr.n_layers=3': model has no key 'encodr'; did you mean 'encoder'?"),
        ("trainer.precision=fp8", f"error: {DEMO}: trainer.precision: "),
        ("model.optim.lr=-1", f"error: {DEMO}: model.optim.lr: input should be greater than 0, got -1"),
        ("model.train_ds.trim_silence=true", f"error: {DEMO}: model.train_ds.trim_silence: expected false, got true"),
    ],
)
def test_recipe_errors_are_one_line(override: str, expected: str) -> None:
    line = one_error_line(run_nestkit("validate", DEMO, override, "--no-params"))
    assert line.startswith(expected), line


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nmodel:\n  encoder:\n    n_heads: [8\n  decoder: {}\n")
    line = one_error_line(run_nestkit("validate", str(bad)))
    assert line.startswith(f"error: {bad}:5:"), line
    assert "YAML syntax error" in line


def test_several_machines_without_torchrun_is_an_error_not_a_one_machine_run() -> None:
    from nestkit.recipe import load_recipe
    from nestkit.train.loop import Trainer

    line = one_error_line(run_nestkit("train", DEMO, "trainer.num_nodes=2"))
    assert line.startswith(f"error: {DEMO}: trainer.num_nodes: 2 machines need torchrun on each of them (torchrun --nnodes 2 "), line
    with pytest.raises(RecipeError, match=r"trainer.num_nodes: 2 machines need torchrun"):
        Trainer(load_recipe(DEMO, "trainer.num_nodes=2"))
    assert run_nestkit("validate", DEMO, "trainer.num_nodes=2", "--no-params").returncode == 0  # torchrun may run it


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_asked_for_on_a_machine_without_one() -> None:
    line = one_error_line(run_nestkit("train", DEMO, "trainer.accelerator=gpu"))
    assert line == "error: trainer.accelerator: 'gpu' but no CUDA device is available here (use 'auto' or 'cpu')"


@pytest.mark.parametrize("verb", ["extract", "probe"])
def test_a_bad_device_is_one_line_in_every_command_that_runs_a_model(verb: str, tmp_path: Path) -> None:
    """bench said so; extract and probe ended in torch's traceback."""
    manifest = "nestkit/demo_data/val_manifest.json"
    args = [verb, "no_such.ckpt", manifest, *(["--label", "speaker"] if verb == "probe" else [str(tmp_path / "out")])]
    line = one_error_line(run_nestkit(*args, "--device", "tpu"))
    assert line == "error: --device: unknown device 'tpu' (use auto, cpu or cuda)"
    if not torch.cuda.is_available():
        line = one_error_line(run_nestkit(*args, "--device", "cuda"))
        assert line == "error: --device cuda: no CUDA GPU is available here (use --device cpu)"


def test_missing_recipe_file() -> None:
    line = one_error_line(run_nestkit("validate", "recipes/no_such_recipe.yaml"))
    assert line == "error: recipes/no_such_recipe.yaml: no such recipe file"


def test_unknown_kind_in_describe() -> None:
    line = one_error_line(run_nestkit("describe", "encodr", "fast_conformer"))
    assert line.startswith("error: unknown kind 'encodr'; did you mean 'encoder'? (kinds: preprocessor, encoder, "), line


def test_an_unknown_kind_in_python_is_an_error_not_an_empty_list() -> None:
    import nestkit

    for call in (lambda: nestkit.list_components("encoders"), lambda: nestkit.build("encoders", {"name": "fast_conformer"})):
        with pytest.raises(RecipeError, match=r"^unknown kind 'encoders'; did you mean 'encoder'\?"):
            call()
    assert "fast_conformer" in [c.name for c in nestkit.list_components("encoder")]


def test_a_message_quoting_a_multi_line_library_error_is_still_one_line() -> None:
    from nestkit.cli.common import error_lines
    from nestkit.errors import CheckpointError, RecipeErrors

    quoted = CheckpointError("x.nemo: unreadable (tried:\n- method gz: not gzip\n- method tar: bad header)")
    assert error_lines(quoted) == ["error: x.nemo: unreadable (tried: - method gz: not gzip - method tar: bad header)"]
    both = RecipeErrors([RecipeError("a\nb", key="k"), RecipeError("c", key="m")])
    assert error_lines(both) == ["error: k: a b", "error: m: c"]


def test_debug_flag_shows_the_traceback() -> None:
    result = run_nestkit("--debug", "validate", DEMO, "model.encoder.n_heads=eight", "--no-params")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "RecipeError" in result.stderr


def test_nestkit_debug_0_means_off() -> None:
    for value, traceback in (("0", False), ("1", True)):
        result = run_nestkit("validate", DEMO, "model.encoder.n_heads=eight", "--no-params", env={"NESTKIT_DEBUG": value})
        assert result.returncode != 0 and ("Traceback" in result.stderr) is traceback, (value, result.stderr)


def test_help_of_every_command_is_clean() -> None:
    from nestkit.cli.main import COMMANDS

    top = run_nestkit("--help", env={"COLUMNS": "400"})
    assert top.returncode == 0
    rows = [line.strip("│ ").split(" ", 1)[0] for line in top.stdout.splitlines() if line.startswith("│")] + [""]
    for command in COMMANDS:
        # wide enough for any summary: each on a single row (no line break kept from a docstring)
        assert rows.count(command) == 1 and rows[rows.index(command) + 1] in (*COMMANDS, ""), command
        result = run_nestkit(command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage:" in result.stdout and result.stderr == ""
        assert "Example" in result.stdout, f"{command} --help shows no example"


def test_every_problem_of_a_recipe_is_one_line_in_validate_and_train(tmp_path: Path) -> None:
    overrides = ["model.encoder.n_heads=eight", "model.optim.lr=-1", "trainer.max_step=3", "model.train_ds.batch_size=0"]
    expected = [
        f"error: {DEMO}: model.train_ds.batch_size: input should be greater than or equal to 1, got 0",
        f"error: {DEMO}: model.encoder.n_heads: expected an integer, got 'eight'",
        f"error: {DEMO}: model.optim.lr: input should be greater than 0, got -1",
        f"error: {DEMO}: trainer: unknown field 'max_step'; did you mean 'max_steps'?",
    ]
    for verb in (["validate", DEMO, "--no-params"], ["train", DEMO, f"exp_manager.exp_dir={tmp_path}"]):
        result = run_nestkit(*verb, *overrides)
        assert result.returncode == 2, (verb, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines() == expected, (verb, result.stderr)
    assert not any(tmp_path.iterdir())  # train stopped before writing anything


def test_many_problems_are_capped_with_a_count_of_the_rest() -> None:
    unknown = [f"model.encoder.bogus_{i:02d}=1" for i in range(24)]
    result = run_nestkit("validate", DEMO, "--no-params", *unknown)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[:20] == [f"error: {DEMO}: model.encoder: unknown field 'bogus_{i:02d}'" for i in range(20)]
    assert lines[20:] == ["error: ... and 4 more problems"]


def test_calling_validate_from_python_does_not_switch_on_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typer.Option default is truthy: read as `--debug`, it set NESTKIT_DEBUG for the whole
    process, and every later `nestkit` subprocess printed tracebacks instead of one line."""
    from nestkit.cli import validate as validate_cli
    from nestkit.errors import RecipeError

    monkeypatch.delenv("NESTKIT_DEBUG", raising=False)
    with pytest.raises(RecipeError):
        validate_cli.validate(Path(DEMO), ["model.encoder.n_heads=5"], params=True, quiet=True)
    assert "NESTKIT_DEBUG" not in os.environ
