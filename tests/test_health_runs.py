"""Target statistics and warnings in real training runs, through the executable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _train_recipe import write_recipe
from conftest import run_nestkit

FAST = {"OMP_NUM_THREADS": "1"}


def _events(folder: Path) -> tuple[dict[str, list[float]], list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    texts = [e.tensor_proto.string_val[0].decode() for tag in acc.Tags()["tensors"] for e in acc.Tensors(tag)]
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, texts


def test_silence_without_feature_normalization_collapses_the_targets_and_the_run_says_so(tmp_path: Path) -> None:
    lines = []
    for i in range(16):
        sf.write(tmp_path / f"quiet{i}.wav", np.zeros(24000, dtype=np.float32), 16000)
        lines.append(json.dumps({"audio_filepath": f"quiet{i}.wav", "duration": 1.5}))
    (tmp_path / "quiet.json").write_text("\n".join(lines) + "\n")
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp", max_steps=4, log_every_n_steps=2, val_check_interval=1000)
    manifest = tmp_path / "quiet.json"
    result = run_nestkit("train", str(recipe), f"model.train_ds.manifest_filepath={manifest}",
                         f"model.validation_ds.manifest_filepath={manifest}", "model.preprocessor.normalize=none", env=FAST)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: target tokens collapsed")]
    assert len(warnings) == 1 and "silence or padding" in warnings[0], result.stdout  # once, not every interval
    scalars, texts = _events(tmp_path / "exp" / "tiny" / "tensorboard")
    assert scalars["target_perplexity"][0] < 1.5 and scalars["target_top1_share"][0] > 0.9
    assert any("collapsed" in t for t in texts)  # and in TensorBoard


def test_a_model_that_cannot_learn_gets_the_no_context_gain_warning(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp", max_steps=4, log_every_n_steps=2, val_check_interval=2,
                          target_health={"patience": 2})
    result = run_nestkit("train", str(recipe), "model.optim.lr=1e-9", "model.optim.sched.min_lr=0", env=FAST)
    assert result.returncode == 0, result.stderr
    assert "warning: no context gain after 2 validations" in result.stdout
    assert "collapsed" not in result.stdout  # the demo's targets are healthy
    scalars, _ = _events(tmp_path / "exp" / "tiny" / "tensorboard")
    for tag in ("target_perplexity", "target_top1_share", "target_classes_used", "unigram_loss", "context_gain",
                "majority_accuracy", "val_unigram_loss", "val_context_gain"):
        assert tag in scalars, tag
    # the end summary's figures add up: gain = unigram baseline - masked-token NLL, as printed
    found = re.search(r"val context gain +([+-][\d.]+) nats \(masked-token NLL ([\d.]+) vs unigram baseline ([\d.]+)\)",
                      result.stdout)
    assert found is not None, result.stdout
    gain, nll, unigram = (float(g) for g in found.groups())
    assert gain == pytest.approx(unigram - nll, abs=1.5e-3)
