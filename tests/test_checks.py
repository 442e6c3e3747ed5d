"""`nestkit validate` warns when a mask block is longer than the shortest utterance it trains on
(with overlap, such an utterance is never masked), naming both keys and the share of audio, and
when a manifest it names does not exist here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import nestkit
from conftest import RECIPES, run_nestkit
from nestkit.checks import unmaskable_utterances

DURATIONS = [1.0, 2.0, 4.99, 5.0, 8.0]  # 500-frame blocks (5 s at 10 ms): the first three never masked
NEVER = (1.0 + 2.0 + 4.99) / sum(DURATIONS)


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "train.json"
    path.write_text("".join(json.dumps({"audio_filepath": f"a{i}.wav", "duration": d}) + "\n" for i, d in enumerate(DURATIONS)))
    return path


def _validate(*overrides: str) -> tuple[int, list[str]]:
    result = run_nestkit("validate", str(RECIPES / "nest_demo.yaml"), "model.masking.block_size=500", *overrides,
                         "-q", "--no-params")
    assert "Traceback" not in result.stderr
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()]


def test_block_longer_than_min_duration_warns_with_the_share_never_masked(manifest: Path) -> None:
    code, lines = _validate("model.train_ds.min_duration=1.0", f"model.train_ds.manifest_filepath={manifest}")
    assert code == 0 and len(lines) == 1
    assert lines[0] == (
        f"warning: {RECIPES / 'nest_demo.yaml'}: model.masking.block_size (500 frames = 5.00 s) is longer than "
        f"model.train_ds.min_duration (1 s): utterances under 5.00 s are never masked ({NEVER:.1%} of the training "
        f"audio in {manifest}); lower the block or raise min_duration"
    )


def test_no_warning_when_every_allowed_utterance_holds_a_block(manifest: Path) -> None:
    # exactly one block long (5 s = 500 frames) can be masked: NeMo's rule start + block <= length
    code, lines = _validate("model.train_ds.min_duration=5.0", f"model.train_ds.manifest_filepath={manifest}")
    assert code == 0 and lines == []
    shipped = run_nestkit("validate", str(RECIPES / "nest_fast_conformer.yaml"), "-q", "--no-params")
    assert shipped.returncode == 0 and shipped.stderr.strip() == ""


def test_a_missing_manifest_warns_and_the_block_check_still_runs_without_a_share(tmp_path: Path) -> None:
    """validate may run on another machine than training: a missing file is a warning there, naming
    the key; training on it stops with one line naming the key (a section names two manifests)."""
    missing = tmp_path / "none.json"
    code, lines = _validate("model.train_ds.min_duration=1.0", f"model.train_ds.manifest_filepath={missing}",
                            f"model.validation_ds.noise_manifest={missing},{RECIPES / 'nest_demo.yaml'}")
    assert code == 0 and len(lines) == 3, lines
    assert lines[0] == f"warning: {RECIPES / 'nest_demo.yaml'}: model.train_ds.manifest_filepath: no such file here: {missing}"
    assert lines[1] == f"warning: {RECIPES / 'nest_demo.yaml'}: model.validation_ds.noise_manifest: no such file here: {missing}"
    assert "model.train_ds.min_duration (1 s): utterances under 5.00 s are never masked; lower" in lines[2]
    for key in ("model.validation_ds.manifest_filepath", "model.train_ds.noise_manifest"):
        train = run_nestkit("train", str(RECIPES / "nest_demo.yaml"), f"{key}={missing}",
                            f"exp_manager.exp_dir={tmp_path / 'exp'}", "trainer.max_steps=1")
        assert train.returncode == 2 and train.stderr.splitlines()[-1] == f"error: {key}: no such file: {missing}", train.stderr
    assert not (tmp_path / "exp").exists()


def test_rules_of_the_check(manifest: Path) -> None:
    base = [f"model.train_ds.manifest_filepath={manifest}", "model.masking.block_size=500"]
    # No minimum: the shortest utterance of the manifest is what counts.
    line = unmaskable_utterances(nestkit.load_recipe(RECIPES / "nest_demo.yaml", [*base, "model.train_ds.min_duration=null"]))
    assert line is not None and "the shortest training utterance (1.00 s; model.train_ds.min_duration is unset)" in line
    # Without overlap the block shrinks to fit: every utterance is masked, nothing to warn about.
    no_overlap = [*base, "model.train_ds.min_duration=1.0", "model.masking.allow_overlap=false"]
    assert unmaskable_utterances(nestkit.load_recipe(RECIPES / "nest_demo.yaml", no_overlap)) is None
    # post_conv: blocks of block_size // 8 subsampled frames; 62 frames of 80 ms need 4.89 s of audio.
    post = [*base, "model.train_ds.min_duration=1.0", "model.mask_position=post_conv"]
    line = unmaskable_utterances(nestkit.load_recipe(RECIPES / "nest_demo.yaml", post))
    assert line is not None and "utterances under 4.89 s are never masked" in line
