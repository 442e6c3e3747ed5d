"""Loader plumbing: skipped items reported by reason, workers capped and spawnable, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from _train_recipe import tiny_recipe
from conftest import run_python
from nestkit.data import build_dataloader
from nestkit.data.config import DatasetConfig
from nestkit.errors import DataError


def speech_like(folder: Path, n: int, bad: int = 0) -> Path:
    """``n`` short noise clips (the first ``bad`` of them corrupt) and their manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        x = (0.1 * rng.standard_normal(16000 + 4000 * (i % 3))).astype(np.float32)
        sf.write(folder / f"u{i}.wav", x, 16000)
        if i < bad:
            (folder / f"u{i}.wav").write_bytes(b"RIFF garbage")
        lines.append(json.dumps({"audio_filepath": f"u{i}.wav", "duration": len(x) / 16000}))
    manifest = folder / "train.json"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_all_missing_audio_is_one_clear_error(tmp_path: Path) -> None:
    manifest = tmp_path / "train.json"
    manifest.write_text("".join(json.dumps({"audio_filepath": f"gone/{i}.wav", "duration": 1.0}) + "\n" for i in range(36)))
    with pytest.raises(DataError, match=r"all 36 audio files of .*train.json are missing; first: .*gone/0.wav"):
        build_dataloader(DatasetConfig(manifest_filepath=str(manifest)), sample_rate=16000, train=True, seed=0)


def test_skipped_report_by_reason_with_paths(tmp_path: Path) -> None:
    manifest = speech_like(tmp_path / "d", 8, bad=3)
    with manifest.open("a") as f:
        f.write(json.dumps({"audio_filepath": "nope.wav", "duration": 1.0}) + "\n")
    loader = build_dataloader(DatasetConfig(manifest_filepath=str(manifest), batch_size=4, shuffle=False),
                              sample_rate=16000, train=True, seed=0)
    delivered = sum(len(b) for b in loader)
    report = loader.skipped_report()
    assert delivered == 5 and report.delivered == 5
    assert report.counts == {"unreadable": 3, "missing": 1}
    assert [Path(p).name for p in report.first["unreadable"]] == ["u0.wav", "u1.wav", "u2.wav"]
    assert sorted(Path(line.split("\t")[1]).name for line in report.lines()) == ["nope.wav", "u0.wav", "u1.wav", "u2.wav"]
    assert report.explain().startswith(f"4 of 9 items of {manifest} skipped (5 used): 3 unreadable, 1 missing (first: ")

    broken = speech_like(tmp_path / "e", 4, bad=4)
    loader = build_dataloader(DatasetConfig(manifest_filepath=str(broken), batch_size=2), sample_rate=16000, train=True, seed=0)
    assert list(loader) == []
    assert loader.skipped_report().explain().startswith(f"all 4 audio files of {broken} were skipped as unreadable; first: ")


def test_training_with_spawned_workers_capped_at_the_cpus(tmp_path: Path) -> None:
    """A short run whose loader workers start with ``spawn`` (Windows' and macOS' default), asking
    for more workers and pinned memory than a CPU-only machine has: one note, no torch warning.
    The run may use one CPU only, so one worker is spawned (each is a new interpreter: ~20 s here)."""
    manifest = speech_like(tmp_path / "data", 8)
    recipe = tiny_recipe(tmp_path / "exp", max_steps=2, val_check_interval=2, limit_val_batches=1)
    recipe["model"]["train_ds"].update(manifest_filepath=str(manifest), num_workers=512, pin_memory=True,
                                       multiprocessing_context="spawn")
    recipe["model"]["validation_ds"].update(manifest_filepath=str(manifest))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    one_cpu = ("import os, sys; os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:1])); "
               "from nestkit.cli.main import main; sys.argv = ['nestkit', *sys.argv[1:]]; main()")
    result = run_python("-c", one_cpu, "train", str(path), timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert out.count("note: train_ds.num_workers=512 but 1 CPU is usable here: using 1 loader worker\n") == 1
    assert "UserWarning" not in out and "pin_memory" not in out
    assert (tmp_path / "exp" / "tiny" / "checkpoints" / "last.ckpt").is_file()
