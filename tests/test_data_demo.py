"""The bundled demo data and the loader end to end on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nestkit.data import build_dataloader, demo_manifests
from nestkit.data.config import DatasetConfig
from nestkit.data.manifest import read_manifest
from nestkit.errors import DataError


def test_demo_manifests_counts_and_durations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths must not depend on the working directory
    train, val, noise = demo_manifests()
    expected = {train: (480, 1075.471), val: (120, 248.853), noise: (10, 60.095)}
    for path, (items, seconds) in expected.items():
        m = read_manifest(str(path))
        assert len(m) == items
        assert m.durations.sum() == pytest.approx(seconds, abs=0.01)
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in m.paths)
    assert train.parent.joinpath("LICENSE.md").is_file()
    rows = {path: [json.loads(line) for line in path.read_text().splitlines()] for path in (train, val)}
    assert {r["speaker"] for r in rows[train]} == {r["speaker"] for r in rows[val]} == {"en", "es", "fr", "it", "ru"}
    assert not {r["audio_filepath"] for r in rows[train]} & {r["audio_filepath"] for r in rows[val]}  # a clean split
    labelled = [r for r in rows[val] if "words" in r]  # the probe's content label, from the transcripts
    assert len(labelled) == 116 and {r["words"] for r in labelled} == {"1-2", "3-5", "6+"}


def test_demo_loader_delivers_every_item_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    train, _, noise = demo_manifests()
    cfg = DatasetConfig(manifest_filepath=str(train), noise_manifest=str(noise), batch_duration=40.0, num_buckets=4)
    loader = build_dataloader(cfg, sample_rate=16000, train=True, seed=3)
    seen: list[int] = []
    for batch in loader:
        assert batch.audio.dtype == torch.float32 and batch.audio_len.dtype == torch.int64
        assert batch.audio.shape == batch.noise.shape == batch.noisy_audio.shape
        assert int(batch.audio_len.max()) == batch.audio.shape[1]
        # the noise fills each utterance and nothing past it
        t = torch.arange(batch.audio.shape[1])
        assert torch.all(batch.noise[t[None, :] >= batch.audio_len[:, None]] == 0)
        assert torch.all(batch.noise.abs().amax(dim=1) > 0)
        seen += batch.indices.tolist()
    assert sorted(seen) == list(range(480))
    assert loader.summary.items == 480 and loader.summary.hours == pytest.approx(1075.471 / 3600, abs=1e-4)
    assert 0.0 < loader.padding_fraction < 0.3  # bucketed: similar lengths together
    assert loader.skipped == {}


def test_missing_manifest_is_one_line_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest_filepath is not set"):
        build_dataloader(DatasetConfig(), sample_rate=16000, train=True, seed=0)
    with pytest.raises(DataError, match="nope.json: no such manifest file"):
        build_dataloader(DatasetConfig(manifest_filepath=str(tmp_path / "nope.json")), sample_rate=16000, train=True, seed=0)
    empty = tmp_path / "empty.json"
    empty.write_text("not json\n")
    with pytest.raises(DataError, match="empty.json: manifest has no usable line"):
        read_manifest(str(empty))


def test_resume_gives_the_same_remaining_batches() -> None:
    train, _, noise = demo_manifests()
    cfg = DatasetConfig(
        manifest_filepath=str(train),
        noise_manifest=str(noise),
        batch_size=8,
        max_duration=1.6,  # a small subset keeps the test fast
        batch_augmentor={"name": "speaker_noise", "prob": 1.0, "noise_ratio": 0.5},
    )
    loader = build_dataloader(cfg, sample_rate=16000, train=True, seed=5, epoch=2)
    full = list(loader)
    resumed = build_dataloader(cfg, sample_rate=16000, train=True, seed=5)
    resumed.load_state_dict({"epoch": 2, "position": 3})
    rest = list(resumed)
    assert len(full) > 4 and len(rest) == len(full) - 3 and loader.num_batches() == len(full)
    for a, b in zip(full[3:], rest):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.noisy_audio, b.noisy_audio)
    state = resumed.state_dict()
    assert (state["epoch"], state["position"]) == (2, len(full)) and state["skips"]["items"] == []


def test_device_augmentation_matches_loader_augmentation() -> None:
    train, _, noise = demo_manifests()
    section = {"name": "multi_speaker_noise", "prob": 1.0, "noise_ratio": 0.5, "max_num_segments": 3}
    common = dict(manifest_filepath=str(train), noise_manifest=str(noise), batch_size=8, max_duration=1.3, batch_augmentor=section)
    in_loader = build_dataloader(DatasetConfig(**common), sample_rate=16000, train=True, seed=2)
    on_device = build_dataloader(DatasetConfig(**common, augment_on_device=True), sample_rate=16000, train=True, seed=2)
    for a, b in zip(in_loader, on_device):
        assert a.augmented and not b.augmented
        assert torch.equal(b.noisy_audio, b.audio + b.noise)  # raw until the trainer augments
        c = on_device.device_augmentor(b.to("cpu"))
        assert torch.allclose(a.noisy_audio, c.noisy_audio, atol=1e-6)
        assert not torch.equal(c.noisy_audio, c.audio)
