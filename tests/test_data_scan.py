"""`nestkit manifest`: from a folder of audio to a manifest, then straight into `nestkit train`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from _train_recipe import tiny_recipe
from conftest import run_nestkit


def audio_tree(root: Path) -> dict[str, float]:
    """Speakers in nested folders, plus a corrupt file, a text file and a symlink loop."""
    rng = np.random.default_rng(0)
    seconds = {}
    for spk in ("alice", "bob", "carol", "dave"):
        for i in range(4):
            rel = f"audio/{spk}/session{i % 2}/utt{i}.{'flac' if i % 2 else 'wav'}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            n = 12000 + 4000 * i
            sf.write(root / rel, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
            seconds[rel] = n / 16000
    (root / "audio/bob/broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt not really")
    (root / "audio/carol/README.txt").write_text("recorded in 2024")
    os.symlink("../..", root / "audio/alice/session0/loop")
    return seconds


def test_manifest_then_train(tmp_path: Path) -> None:
    seconds = audio_tree(tmp_path)
    out = tmp_path / "train.json"
    result = run_nestkit("manifest", str(tmp_path / "audio"), "--out", str(out), "--val-fraction", "0.25",
                         "--group-by-folder", "1", "--label-from-folder", "1", "--min-duration", "0.8")
    assert result.returncode == 0, result.stderr
    train = [json.loads(line) for line in out.read_text().splitlines()]
    val = [json.loads(line) for line in (tmp_path / "train_val.json").read_text().splitlines()]
    kept = {k: v for k, v in seconds.items() if v >= 0.8}  # utt0 (0.75 s) is too short
    assert sorted(e["audio_filepath"] for e in train + val) == sorted(kept)  # relative, each file once (the loop ends)
    assert all(abs(e["duration"] - kept[e["audio_filepath"]]) < 1e-6 for e in train + val)
    assert all(e["speaker"] == e["audio_filepath"].split("/")[1] for e in train + val)
    assert val and not {e["speaker"] for e in train} & {e["speaker"] for e in val}  # a speaker is on one side only
    assert "skipped 6 files: 1 not audio, 4 too short, 1 unreadable" in result.stdout
    assert "audio/bob/broken.wav" in result.stdout and "README.txt" in result.stdout
    again = run_nestkit("manifest", str(tmp_path / "audio"), "--out", str(tmp_path / "again.json"), "--val-fraction", "0.25",
                        "--group-by-folder", "1", "--label-from-folder", "1", "--min-duration", "0.8", "--jobs", "1")
    assert (tmp_path / "again_val.json").read_text() == (tmp_path / "train_val.json").read_text()  # deterministic
    assert again.returncode == 0

    recipe = tiny_recipe(tmp_path / "exp", max_steps=2, val_check_interval=2, limit_val_batches=1)
    recipe["model"]["train_ds"].update(manifest_filepath=str(out), batch_size=4)
    recipe["model"]["validation_ds"].update(manifest_filepath=str(tmp_path / "train_val.json"), batch_size=4)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    trained = run_nestkit("train", str(tmp_path / "recipe.yaml"), timeout=600)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert f"train data  {len(train)} items" in trained.stdout
    assert (tmp_path / "exp" / "tiny" / "checkpoints" / "last.ckpt").is_file()


def test_bad_folder_is_one_line(tmp_path: Path) -> None:
    result = run_nestkit("manifest", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.json"))
    assert result.returncode == 2 and result.stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such folder"
