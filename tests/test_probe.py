"""`nestkit probe` on a synthetic task with a known answer: noise bursts against steady noise (a
pooled feature separates them perfectly) against labels drawn independently of the audio (chance);
probe.json's layout; and each bad input, through the real executable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import nestkit
from _train_recipe import tiny_recipe
from conftest import run_nestkit
from nestkit.errors import NestkitError
from nestkit.pretrained import save_model
from nestkit.probing.classifier import fold_accuracies
from nestkit.probing.items import stratified_folds

RATE, PER_CLASS = 16000, 12
ENV = {"OMP_NUM_THREADS": "1"}


def noise(rng: np.random.Generator, bursts: bool, seconds: float) -> np.ndarray:
    """Steady white noise, or the same noise switched on and off 4-6 times a second."""
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.05 * rng.standard_normal(t.shape)
    if bursts:
        wave *= (np.sin(2 * np.pi * rng.uniform(4, 6) * t + rng.uniform(0, 2 * np.pi)) > 0) + 0.02
    return wave.astype(np.float32)


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny 2-block model checkpoint and manifests of noise-burst and steady-noise clips."""
    root = tmp_path_factory.mktemp("probe")
    recipe = tiny_recipe(root / "exp")
    recipe["model"]["encoder"]["n_layers"] = 2
    torch.manual_seed(0)
    save_model(root / "model.ckpt", nestkit.build_model(recipe), recipe)
    rng = np.random.default_rng(0)
    lines = []
    for pattern in ("bursts", "steady"):
        unrelated = rng.permutation(["a", "b"] * (PER_CLASS // 2))  # balanced within each pattern
        for k in range(PER_CLASS):
            seconds = float(rng.uniform(0.4, 0.9))
            sf.write(root / f"{pattern}{k}.wav", noise(rng, pattern == "bursts", seconds), RATE)
            lines.append({"audio_filepath": f"{pattern}{k}.wav", "duration": seconds, "pattern": pattern,
                          "unrelated": str(unrelated[k])})
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    extra = [{"audio_filepath": "broken.wav", "duration": 0.5, "pattern": "steady", "unrelated": "a"},
             {"audio_filepath": "steady0.wav", "duration": 0.5}]  # no label
    write = lambda name, entries: (root / name).write_text("".join(json.dumps(e) + "\n" for e in entries))  # noqa: E731
    write("all.json", lines + extra)
    write("split.json", [{**e, "split": "test" if i % 4 == 0 else "train"} for i, e in enumerate(lines)])
    write("one_class.json", [e for e in lines if e["pattern"] == "bursts"])
    return {"root": root, "ckpt": root / "model.ckpt", "all": root / "all.json", "split": root / "split.json",
            "one_class": root / "one_class.json"}


def test_separable_labels_end_to_end(task: dict[str, Path]) -> None:
    out = task["root"] / "out"
    result = run_nestkit("probe", str(task["ckpt"]), str(task["all"]), "--label", "pattern", "--folds", "4",
                         "--out", str(out), env=ENV)
    assert result.returncode == 0, result.stderr
    assert "skipped: 1 audio unreadable, 1 no 'pattern'" in result.stdout
    for row in ("log-mel", "pretrained", "random init", "4-fold cross-validation"):
        assert row in result.stdout
    probe = json.loads((out / "probe.json").read_text())
    assert list(probe) == ["label", "classes", "items", "folds", "results"]
    assert (probe["label"], probe["classes"], probe["items"], probe["folds"]) == ("pattern", 2, 2 * PER_CLASS, 4)
    assert [(r["features"], r["layer"]) for r in probe["results"]] == [
        ("pretrained", 0), ("pretrained", 1), ("random_init", 0), ("random_init", 1), ("log_mel", None)]
    for r in probe["results"]:
        assert list(r) == ["features", "layer", "accuracy", "accuracy_std"]
        assert r["accuracy"] >= 0.9, r  # bursts against steady noise: plain in any pooled feature
    assert probe["results"][-1]["accuracy"] == 1.0
    assert (out / "probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_unrelated_to_the_audio_score_near_chance(task: dict[str, Path]) -> None:
    probe = nestkit.probe(task["ckpt"], str(task["all"]), "unrelated", folds=4, layers="-1", progress=False)
    assert [(r["features"], r["layer"]) for r in probe["results"]] == [("pretrained", 1), ("random_init", 1), ("log_mel", None)]
    accuracies = [r["accuracy"] for r in probe["results"]]
    assert max(accuracies) <= 0.75 and np.mean(accuracies) <= 0.65, accuracies


def test_folds_are_stratified_and_fits_deterministic() -> None:
    labels = np.array([0] * 9 + [1] * 6)
    fold = stratified_folds(labels, 3, seed=1)
    assert [np.bincount(labels[fold == k]).tolist() for k in range(3)] == [[3, 2]] * 3
    assert np.array_equal(fold, stratified_folds(labels, 3, seed=1))
    assert not np.array_equal(fold, stratified_folds(labels, 3, seed=2))
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(15, 8, generator=generator) + torch.from_numpy(labels)[:, None] * 0.5
    is_test = torch.from_numpy(fold)[None, :] == torch.arange(3)[:, None]
    first = fold_accuracies(features, torch.from_numpy(labels), is_test, 2)
    assert torch.equal(first, fold_accuracies(features, torch.from_numpy(labels), is_test, 2))
    # each fold fitted alone gives what the batched fit gives
    alone = torch.cat([fold_accuracies(features, torch.from_numpy(labels), is_test[k:k + 1], 2) for k in range(3)])
    torch.testing.assert_close(alone, first)


def test_a_split_key_replaces_cross_validation(task: dict[str, Path]) -> None:
    probe = nestkit.probe(task["ckpt"], str(task["split"]), "pattern", layers="0", progress=False)
    assert probe["folds"] == 1 and probe["items"] == 2 * PER_CLASS
    log_mel = probe["results"][-1]
    assert log_mel["features"] == "log_mel" and log_mel["accuracy"] == 1.0 and log_mel["accuracy_std"] == 0.0


@pytest.mark.parametrize(
    ("manifest", "args", "message"),
    [
        ("one_class", ["--label", "pattern"],
         "label 'pattern' has 1 class ('bursts') among 12 usable items; a probe needs at least 2 (choose another --label)"),
        ("all", ["--label", "pattern", "--folds", "13"],
         "class 'bursts' of label 'pattern' has 12 usable item(s), fewer than --folds 13 (use --folds 12)"),
        ("all", ["--label", "patern"], "no line has the label key 'patern'; did you mean 'pattern'?"),
    ],
)
def test_bad_input_is_one_line(task: dict[str, Path], manifest: str, args: list[str], message: str) -> None:
    result = run_nestkit("probe", str(task["ckpt"]), str(task[manifest]), *args, "--out", str(task["root"] / "bad"), env=ENV)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {task[manifest]}: {message}"


def test_bad_layers_name_the_option(task: dict[str, Path]) -> None:
    with pytest.raises(NestkitError, match=r"^--layers: 2 is out of range: the encoder has 2 blocks \(0..1, or -2..-1\)$"):
        nestkit.probe(task["ckpt"], str(task["all"]), "pattern", layers="0,2", progress=False)
    with pytest.raises(NestkitError, match="--layers: 'last' is not 'all' or comma-separated integers"):
        nestkit.probe(task["ckpt"], str(task["all"]), "pattern", layers="last", progress=False)
