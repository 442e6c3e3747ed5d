"""Unusable inputs never stop the loader: skipped, counted by reason, the rest delivered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nestkit.data import build_dataloader
from nestkit.data.config import DatasetConfig
from nestkit.data.manifest import read_manifest


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.1 * np.sin(2 * np.pi * 220 * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def messy(tmp_path: Path) -> tuple[Path, dict[str, float]]:
    d = tmp_path / "audio"
    d.mkdir()
    sf.write(d / "good.wav", tone(1.0, 16000), 16000)
    sf.write(d / "stereo44k.flac", tone(1.5, 44100, channels=2), 44100)
    sf.write(d / "tel8k.wav", tone(2.0, 8000), 8000)
    sf.write(d / "good2.ogg", tone(1.25, 16000), 16000)
    (d / "zero.wav").write_bytes(b"")
    sf.write(d / "trunc.wav", tone(1.0, 16000), 16000)
    (d / "trunc.wav").write_bytes((d / "trunc.wav").read_bytes()[:30])
    (d / "garbage.flac").write_bytes(np.random.default_rng(0).bytes(3000))
    nan = tone(1.0, 16000)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    good = {"audio/good.wav": 1.0, "audio/stereo44k.flac": 1.5, "audio/tel8k.wav": 2.0, "audio/good2.ogg": 1.25}
    lines = [json.dumps({"audio_filepath": p, "duration": s, "text": "x"}) for p, s in good.items()]
    lines += [
        json.dumps({"audio_filepath": "audio/missing.wav", "duration": 1.0}),
        json.dumps({"audio_filepath": "audio/zero.wav", "duration": 1.0}),
        json.dumps({"audio_filepath": "audio/trunc.wav", "duration": 1.0}),
        json.dumps({"audio_filepath": "audio/garbage.flac", "duration": 1.0}),
        json.dumps({"audio_filepath": "audio/nan.wav", "duration": 1.0}),
        "{this is not json",
        json.dumps({"duration": 1.0, "text": "no path"}),
        json.dumps({"audio_filepath": "audio/good.wav", "duration": -2.0}),
    ]
    manifest = tmp_path / "manifest.json"
    manifest.write_text("\n".join(lines[:6]) + "\n\n" + "\n".join(lines[6:]) + "\n")
    return manifest, good


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_skips_and_counts(messy: tuple[Path, dict[str, float]], workers: int) -> None:
    manifest, good = messy
    before = {p: p.stat().st_mtime_ns for p in manifest.parent.rglob("*")}
    cfg = DatasetConfig(manifest_filepath=str(manifest), batch_size=3, num_workers=workers,
                        batch_augmentor={"name": "multi_speaker_noise", "prob": 1.0, "noise_ratio": 0.5})
    loader = build_dataloader(cfg, sample_rate=16000, train=True, seed=0)
    report = loader.summary
    assert report.malformed == {"not_json": 1, "no_audio_filepath": 1, "bad_duration": 1}
    assert any(" line 11: not JSON (" in line for line in report.malformed_lines)  # line numbers count blank lines
    lengths: dict[str, int] = {}
    per_batch: dict[str, int] = {}
    for batch in loader:
        for k, v in batch.skipped.items():
            per_batch[k] = per_batch.get(k, 0) + v
        for i, n in zip(batch.indices.tolist(), batch.audio_len.tolist()):
            lengths[loader.manifest.paths[i]] = n
        assert bool(batch.noisy_audio.isfinite().all())
    for k, v in loader.pending_skips.items():  # skips after the last delivered batch
        per_batch[k] = per_batch.get(k, 0) + v
    assert loader.skipped == per_batch == {"missing": 1, "empty": 1, "unreadable": 2, "non_finite": 1}
    assert {Path(p).relative_to(manifest.parent).as_posix(): n for p, n in lengths.items()} == {
        p: int(s * 16000) for p, s in good.items()
    }
    assert len(loader.skip_examples) == 5 and any("missing.wav" in e for e in loader.skip_examples)
    assert {p: p.stat().st_mtime_ns for p in manifest.parent.rglob("*")} == before  # nothing written


def test_duration_filter_report(messy: tuple[Path, dict[str, float]]) -> None:
    manifest, _ = messy
    m = read_manifest(str(manifest), min_duration=1.1, max_duration=1.9)
    assert m.report.too_short == 6 and m.report.too_long == 1 and m.report.items == 2
    assert m.report.dropped_seconds == pytest.approx(8.0)
    assert "2 items" in m.report.summary() and "6 too short + 1 too long" in m.report.summary()
