"""Bad-input fuzzing: corrupt audio files, random manifest lines and mutated recipes must end in
a skipped item or nestkit's one-line error, never a traceback, a hang or a crash.

Cases come from seed-driven generators (tests/reliability/corrupt.py) and run in a separate,
memory-capped worker process (tests/reliability/worker.py), so a decoder crash or a runaway
allocation fails a case instead of the test session. Each property runs a fixed list of seeds
(the same cases every run, every kind of case equally often) and names every seed that failed;
benchmarks/reliability_report.py sweeps more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from _train_recipe import tiny_recipe
from conftest import run_nestkit
from nestkit.data import build_dataloader
from nestkit.data.config import DatasetConfig
from nestkit.data.manifest import read_manifest
from reliability.checks import check_recipe
from reliability.corrupt import AUDIO_KINDS, SEMANTIC_MISTAKES, _set, audio_case
from reliability.worker import IsolatedChecker

CASES = 120  # per property


def seeds(count: int, high: int, *, kinds: int = 1, salt: int = 0) -> list[int]:
    """``count`` fixed seeds in [0, high): the ends of the range first, then random ones; with
    ``kinds``, seed % kinds (the case's kind for the audio generator) cycles through every kind."""
    rng = np.random.default_rng(20261207 + salt)
    drawn = [0, 1, high - 1] + [int(x) for x in rng.integers(0, high, count - 3)]
    return [seed - seed % kinds + i % kinds for i, seed in enumerate(drawn)] if kinds > 1 else drawn


def failures(checker: IsolatedChecker, requests: list[dict[str, Any]]) -> list[str]:
    """Each request's violation, if any (all of them run: a failure names every bad seed)."""
    answers = [(request, checker.check(request)) for request in requests]
    return [f"seed {request['seed']}: {answer['violation']}" for request, answer in answers if "violation" in answer]


@pytest.fixture(scope="module")
def checker() -> Iterator[IsolatedChecker]:
    with IsolatedChecker() as worker:
        yield worker


def _ok(answer: dict[str, Any]) -> str:
    assert "violation" not in answer, answer["violation"]
    return answer["outcome"]


# ---------------------------------------------------------------------------- audio


def test_corrupt_audio_in_the_manifest_data_path_is_skipped(checker: IsolatedChecker) -> None:
    """Random bytes behind RIFF/fLaC/OggS/... magics, truncated files, glued containers; read as the manifest dataset and the noise pool read them (1 s window)."""
    cases = seeds(CASES, 10**6 * len(AUDIO_KINDS), kinds=len(AUDIO_KINDS))
    assert {audio_case(seed).kind for seed in cases[:len(AUDIO_KINDS)]} == set(AUDIO_KINDS)
    assert failures(checker, [{"check": "audio", "seed": seed, "mode": "window"} for seed in cases]) == []


def test_undecodable_streams_are_counted_as_unreadable(checker: IsolatedChecker) -> None:
    for seed in (0, 1, 2, 3):  # random bytes after a magic, truncated, bit flips, glued containers
        _ok(checker.check({"check": "audio", "seed": seed, "mode": "stream"}))


@pytest.mark.parametrize(
    ("seed", "mode"),
    [
        pytest.param(68, "whole", id="flac-declaring-2**36-samples-read-whole"),
        pytest.param(148, "window", id="wav-declaring-2**31-Hz-read-as-1s-window"),
        pytest.param(1342, "window", id="wav-with-4-flipped-header-bits-read-as-1s-window"),
    ],
)
def test_absurd_declared_sizes_are_skipped(checker: IsolatedChecker, seed: int, mode: str) -> None:
    assert audio_case(seed).kind in ("huge_sizes", "bit_flips")
    _ok(checker.check({"check": "audio", "seed": seed, "mode": mode}))


def test_dataset_skips_corrupt_files_and_delivers_the_rest(tmp_path: Path) -> None:
    """A manifest mixing 42 generated corrupt files with 3 good ones, through the real loader."""
    lines = []
    for seed in range(70):
        path = tmp_path / f"bad{seed}.wav"
        path.write_bytes(audio_case(seed).data)
        lines.append({"audio_filepath": path.name, "duration": 1.0})
    good = {}
    for i, rate in enumerate((16000, 8000, 44100)):
        sf.write(tmp_path / f"good{i}.flac", np.full(rate, 0.1, np.float32), rate)
        good[f"good{i}.flac"] = 16000
        lines.append({"audio_filepath": f"good{i}.flac", "duration": 1.0})
    manifest = tmp_path / "manifest.json"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    loader = build_dataloader(DatasetConfig(manifest_filepath=str(manifest), batch_size=4, shuffle=False),
                              sample_rate=16000, train=False, seed=0)
    delivered: dict[str, int] = {}
    for batch in loader:
        assert bool(batch.audio.isfinite().all())
        for i, n in zip(batch.indices.tolist(), batch.audio_len.tolist()):
            delivered[Path(loader.manifest.paths[i]).name] = n
    assert len(delivered) + sum(loader.skipped.values()) == len(lines), (delivered, loader.skipped)
    assert {k: delivered[k] for k in good} == good  # every good file arrives, resampled to 1 s at 16 kHz
    assert set(loader.skipped) <= {"empty", "unreadable", "non_finite"} and sum(loader.skipped.values()) >= 20


# ---------------------------------------------------------------------------- manifests


def test_random_manifest_lines_are_skipped_or_one_line_errors(checker: IsolatedChecker) -> None:
    requests = [{"check": "manifest", "seed": seed, "huge_ints": True} for seed in seeds(CASES, 2**32, salt=1)]
    assert failures(checker, requests) == []


@pytest.mark.parametrize("key", ["duration", "offset"])
def test_integer_beyond_float_range_is_a_malformed_line(tmp_path: Path, key: str) -> None:
    entry = {"audio_filepath": "a.wav", "duration": 1.0, key: 10**400}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(entry) + "\n" + json.dumps({"audio_filepath": "b.wav", "duration": 2.0}) + "\n")
    manifest = read_manifest(str(path))
    assert len(manifest) == 1 and manifest.report.malformed == {f"bad_{key}": 1}


# ---------------------------------------------------------------------------- recipes


@pytest.fixture(scope="module")
def base_recipe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return tiny_recipe(tmp_path_factory.mktemp("recipes") / "exp")


def test_mutated_recipes_validate_or_fail_in_one_line(checker: IsolatedChecker, base_recipe: dict[str, Any]) -> None:
    """Wrong types, negatives, zeros, NaN/inf, unknown and deleted keys, cross-field mistakes;
    through `nestkit validate`'s own function (building the model), in the worker process."""
    requests = [{"check": "recipe", "seed": seed, "base": base_recipe} for seed in seeds(CASES, 2**32, salt=2)]
    assert failures(checker, requests) == []


def _with(base: dict[str, Any], where: str, value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(base))
    _set(data, tuple(where.split(".")), value)
    if where == "model.train_ds.min_duration":
        _set(data, ("model", "train_ds", "max_duration"), 1.0)
    return data


@pytest.mark.parametrize(
    ("where", "value"),
    SEMANTIC_MISTAKES,
)
def test_each_range_or_cross_field_mistake_is_a_one_line_error(tmp_path: Path, base_recipe: dict[str, Any],
                                                               where: str, value: Any) -> None:
    from nestkit.cli import validate as validate_cli
    from nestkit.errors import NestkitError

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_with(base_recipe, where, value), sort_keys=False))
    key = where.split(".")[-1] if not where.endswith("._target_") else "_target_"
    with pytest.raises(NestkitError) as info:
        validate_cli.validate(path, [], params=True, quiet=True)
    message = str(info.value)
    assert "\n" not in message and key in message, message


EXECUTABLE_CASES = [
    ("model.encoder.n_heads=3", "n_heads (3) must divide d_model (32)"),
    ("model.masking.block_size=0", "model.masking.block_size: input should be greater than or equal to 1, got 0"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ("model.optim.betas=[1.5,0.98]", "betas must lie in [0, 1)"),
    ("model.encoder._target_=os.system", "unknown field '_target_'"),
]


def test_mistakes_through_the_executable(tmp_path: Path, base_recipe: dict[str, Any]) -> None:
    """A handful of the same mistakes through `nestkit validate` itself."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(base_recipe, sort_keys=False))
    for override, needle in EXECUTABLE_CASES:
        done = run_nestkit("validate", str(path), override, "-q", timeout=120)
        err = done.stderr
        lines = [line for line in err.splitlines() if line.strip()]
        assert done.returncode == 2 and "Traceback" not in err and len(lines) == 1, (override, err)
        assert lines[0].startswith(f"error: {path}: ") and needle in lines[0], (override, lines[0])


def test_mutated_recipe_check_catches_a_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  base_recipe: dict[str, Any]) -> None:
    """The checker is not blind: a validate that raises a bare exception is reported."""
    from nestkit.cli import validate as validate_cli
    from reliability.checks import Violation

    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(validate_cli, "validate", broken)
    with pytest.raises(Violation, match="KeyError"):
        check_recipe(base_recipe, 0, tmp_path)
