"""Batch augmentors: NeMo's mixing semantics, computed for the whole batch."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import nestkit
from nestkit.data.batch import AudioBatch, BatchAugmentor
from nestkit.errors import RecipeError


def make_batch(lengths: list[int], noise: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> AudioBatch:
    g = torch.Generator().manual_seed(0)
    T = max(lengths)
    length = torch.tensor(lengths)
    pad = torch.arange(T)[None, :] < length[:, None]
    if audio is None:
        audio = torch.randn(len(lengths), T, generator=g)
    audio = audio * pad
    if noise is None:  # constant power 1 everywhere: every window has the same energy
        noise = torch.randint(0, 2, (len(lengths), T), generator=g).float() * 2 - 1
    noise = noise * pad
    return AudioBatch(audio, length, noise, length.clone(), audio + noise, length.clone(), torch.arange(len(lengths)))


def build(name: str, **fields: Any) -> BatchAugmentor:
    return nestkit.build("augmentor", {"name": name, **fields})


def added(batch: AudioBatch, out: AudioBatch) -> torch.Tensor:
    return out.noisy_audio - batch.audio


@pytest.mark.parametrize("name", ["speaker_noise", "multi_speaker_noise"])
def test_noise_energy_ratio_and_mix_length(name: str) -> None:
    lengths = [16000, 12000, 9001, 4000]
    batch = make_batch(lengths)
    aug = build(name, prob=1.0, noise_ratio=1.0, min_r_noise=7.5, max_r_noise=7.5, min_mix_rate=0.5, max_mix_rate=0.5)
    out = aug(batch, torch.Generator().manual_seed(1))
    extra = added(batch, out)
    for i, n in enumerate(lengths):
        mixed = extra[i].abs() > 0
        mix_len = max(1, int(n * 0.5))
        assert int(mixed.sum()) == mix_len
        assert not mixed[n:].any()
        audio_power = float((batch.audio[i, :n] ** 2).mean())
        if name == "speaker_noise":  # NeMo: noise power over the mixed segment (stationary here)
            noise_power = float((extra[i, mixed] ** 2).mean())
        else:  # NeMo: both averaged over the utterance
            noise_power = float((extra[i, :n] ** 2).sum()) / n
        assert 10 * math.log10(audio_power / noise_power) == pytest.approx(7.5, abs=1e-3)
    assert torch.equal(out.noisy_audio_len, batch.audio_len)


def test_drawn_ratios_and_lengths_stay_in_their_ranges() -> None:
    lengths = [8000] * 64
    batch = make_batch(lengths)
    aug = build("multi_speaker_noise", prob=1.0, noise_ratio=1.0, min_r_noise=-5.0, max_r_noise=20.0,
                min_mix_rate=0.2, max_mix_rate=0.6, min_num_segments=1, max_num_segments=3)
    extra = added(batch, aug(batch, torch.Generator().manual_seed(2)))
    db = 10 * torch.log10((batch.audio**2).sum(1) / (extra**2).sum(1))
    assert db.min() >= -5.0 - 1e-3 and db.max() <= 20.0 + 1e-3 and db.std() > 3  # really drawn
    mixed = (extra.abs() > 0).sum(1)
    assert mixed.min() >= int(8000 * 0.2) and mixed.max() <= int(8000 * 0.6)


@pytest.mark.parametrize("name", ["speaker_noise", "multi_speaker_noise"])
def test_prob_zero_leaves_audio_unchanged(name: str) -> None:
    batch = make_batch([5000, 3000])
    out = build(name, prob=0.0, noise_ratio=0.5)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out.noisy_audio, batch.audio)


def ratio_coded(lengths: list[int]) -> torch.Tensor:
    """Row j alternates 1 and j+2: the ratio of neighbouring samples names the source row."""
    T = max(lengths)
    rows = [torch.where(torch.arange(T) % 2 == 0, 1.0, float(j + 2)) for j in range(len(lengths))]
    return torch.stack(rows)


def source_rows(extra: torch.Tensor) -> list[set[int]]:
    """For each row, the source rows its added signal came from (by the neighbour ratio)."""
    out = []
    for row in extra:
        v = row[row != 0]
        r = (v[1:] / v[:-1]).abs()
        r = torch.where(r < 1, 1 / r, r)
        out.append({int(round(float(x))) - 2 for x in r.unique() if float(x) > 1.01})
    return out


@pytest.mark.parametrize("name", ["speaker_noise", "multi_speaker_noise"])
def test_speech_mode_mixes_other_utterances(name: str) -> None:
    lengths = [4000, 4000, 3000, 4000, 2000]
    batch = make_batch(lengths, noise=torch.zeros(5, 4000), audio=ratio_coded(lengths))
    aug = build(name, prob=1.0, noise_ratio=0.0, min_mix_rate=0.5, max_mix_rate=0.5)
    for seed in range(5):
        extra = added(batch, aug(batch, torch.Generator().manual_seed(seed)))
        for i, sources in enumerate(source_rows(extra)):
            assert sources and i not in sources, (seed, i, sources)


def test_batch_of_one_falls_back_to_noise() -> None:
    noise = torch.where(torch.arange(3000) % 2 == 0, 1.0, -1.0)[None, :]
    batch = make_batch([3000], noise=noise)
    for name in ("speaker_noise", "multi_speaker_noise"):
        out = build(name, prob=1.0, noise_ratio=0.0, min_r_noise=0.0, max_r_noise=0.0, min_r_speech=10, max_r_speech=10)(
            batch, torch.Generator().manual_seed(0)
        )
        extra = added(batch, out)[0]
        v = extra[extra != 0]
        assert v.numel() > 0 and torch.allclose(v[1:], -v[:-1])  # the alternating noise, scaled
        assert 10 * math.log10(float((batch.audio**2).sum()) / float((extra**2).sum())) == pytest.approx(
            0.0 if name == "multi_speaker_noise" else 10 * math.log10(3000 / v.numel()), abs=1e-3
        )


def test_short_noise_is_repeated_and_results_are_reproducible() -> None:
    noise = torch.zeros(2, 6000)
    noise[:, :500] = torch.where(torch.arange(500) % 2 == 0, 1.0, -1.0)
    batch = make_batch([6000, 6000], noise=noise)
    batch.noise_len = torch.tensor([500, 500])
    aug = build("speaker_noise", prob=1.0, noise_ratio=1.0, min_mix_rate=1.0, max_mix_rate=1.0)
    a = aug(batch, torch.Generator().manual_seed(9))
    b = aug(batch, torch.Generator().manual_seed(9))
    assert torch.equal(a.noisy_audio, b.noisy_audio)
    extra = added(batch, a)
    assert bool((extra.abs() > 0).all())  # 500 samples of noise cover all 6000 by repetition


def test_bad_parameters_are_recipe_errors() -> None:
    with pytest.raises(RecipeError, match="min_mix_rate .* must not exceed max_mix_rate"):
        build("speaker_noise", min_mix_rate=0.8, max_mix_rate=0.2)
    with pytest.raises(RecipeError, match="prob"):
        build("multi_speaker_noise", prob=1.5)


@pytest.mark.parametrize("name", ["speaker_noise", "multi_speaker_noise"])
def test_cpu_path_touches_only_real_samples_and_matches_the_dense_path(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU path (slices of the valid samples) gives the fixed-shape (B, T) path's result up
    to float rounding of the energies, and the padding stays exactly zero."""
    from nestkit.components import augmentors

    extra = {"max_num_segments": 4, "max_num_speakers": 3} if name == "multi_speaker_noise" else {}
    settings = [dict(prob=1.0, noise_ratio=0.5), dict(prob=0.5, noise_ratio=0.0, min_mix_rate=0.2, max_mix_rate=0.9),
                dict(prob=0.8, noise_ratio=1.0, min_mix_rate=1.0, max_mix_rate=1.0, **extra)]
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        lengths = torch.randint(1, 3000, (int(torch.randint(1, 9, (), generator=g)),), generator=g).tolist()
        batch = make_batch(lengths, noise=torch.randn(len(lengths), max(lengths), generator=g))
        batch.noise_len = (batch.audio_len - (seed % 3) * 700).clamp(min=0) if seed % 4 else torch.zeros_like(batch.audio_len)
        batch.noise = batch.noise * (torch.arange(max(lengths))[None, :] < batch.noise_len[:, None])
        for fields in settings:
            aug = build(name, **fields)
            fast = aug(batch, torch.Generator().manual_seed(seed))
            with monkeypatch.context() as m:
                m.setattr(augmentors, "_layout", augmentors._Dense)
                dense = aug(batch, torch.Generator().manual_seed(seed))
            assert torch.allclose(fast.noisy_audio, dense.noisy_audio, rtol=1e-5, atol=1e-6), (seed, fields)
            padding = torch.arange(batch.audio.shape[1])[None, :] >= batch.audio_len[:, None]
            assert torch.equal(fast.noisy_audio[padding], torch.zeros(int(padding.sum())))
            assert torch.equal(fast.noisy_audio != batch.audio, dense.noisy_audio != batch.audio)  # same samples mixed
