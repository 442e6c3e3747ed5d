"""room_reverb: the impulse responses are rooms with the drawn RT60, and the batch contract holds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nestkit
from nestkit import AudioBatch
from nestkit.errors import RecipeError
from nestkit_augment.room_reverb import RoomReverb

SR = 16000


def _reverb(**kw: object) -> RoomReverb:
    return nestkit.build("augmentor", {"name": "room_reverb", **kw})


def _batch(b: int = 4, t: int = 8000, seed: int = 0) -> AudioBatch:
    g = torch.Generator().manual_seed(seed)
    length = torch.randint(t // 2, t + 1, (b,), generator=g)
    length[0] = t
    valid = torch.arange(t)[None, :] < length[:, None]
    audio = torch.randn(b, t, generator=g) * valid
    noise = 0.1 * torch.randn(b, t, generator=g) * valid
    return AudioBatch(audio=audio, audio_len=length, noise=noise, noise_len=length.clone(),
                      noisy_audio=audio + noise, noisy_audio_len=length.clone(), indices=torch.arange(b))


def schroeder_rt60(ir: np.ndarray, sr: int) -> float:
    """RT60 from the Schroeder energy decay curve: line fit between -5 and -25 dB (T20 x 3)."""
    edc = np.cumsum((ir.astype(np.float64) ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    fit = (edc_db <= -5) & (edc_db >= -25)
    slope, _ = np.polyfit(np.nonzero(fit)[0] / sr, edc_db[fit], 1)
    return -60.0 / slope


def test_measured_rt60_matches_the_drawn_value() -> None:
    reverb = _reverb(direct_path=False, rt60_min=0.2, rt60_max=0.9, ir_duration=1.0)
    ir, rt60 = reverb.impulse_responses(8, torch.Generator().manual_seed(1))
    assert ir.shape == (8, SR)
    assert float(rt60.min()) >= 0.2 and float(rt60.max()) <= 0.9 and float(rt60.std()) > 0.05
    for row, drawn in zip(ir.numpy(), rt60.tolist()):
        assert schroeder_rt60(row, SR) == pytest.approx(drawn, rel=0.08)


def test_direct_path_then_silent_pre_delay_then_decaying_tail_at_the_drawn_drr() -> None:
    reverb = _reverb(rt60_min=0.4, rt60_max=0.4, drr_min=6.0, drr_max=6.0, pre_delay_min=0.01, pre_delay_max=0.01)
    ir, _ = reverb.impulse_responses(4, torch.Generator().manual_seed(2))
    onset = int(0.01 * SR)
    assert torch.all(ir[:, 0] == 1.0)  # direct sound
    assert torch.all(ir[:, 1:onset] == 0.0)  # nothing arrives before the first reflection
    tail_energy = (ir[:, onset:].double() ** 2).sum(1)
    assert torch.allclose(tail_energy, torch.full((4,), 10 ** (-0.6), dtype=torch.float64), rtol=1e-4)
    for row in ir[:, onset:].numpy():
        assert schroeder_rt60(row, SR) == pytest.approx(0.4, rel=0.08)
    # energy decays: the second 100 ms of the tail holds far less than the first
    first, second = (ir[:, onset:onset + 1600] ** 2).sum(1), (ir[:, onset + 1600:onset + 3200] ** 2).sum(1)
    assert torch.all(second < first * 10 ** (-1.0))  # 100 ms at RT60 0.4 s is -15 dB


def test_prob_zero_leaves_the_batch_unchanged() -> None:
    batch = _batch()
    out = _reverb(prob=0.0)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out.noisy_audio, batch.noisy_audio)
    assert torch.equal(out.noisy_audio_len, batch.noisy_audio_len) and torch.equal(out.audio, batch.audio)


def test_prob_one_is_the_convolution_cut_to_length_at_the_same_energy() -> None:
    batch = _batch(seed=3)
    reverb = _reverb(prob=1.0, rt60_min=0.3, rt60_max=0.6, ir_duration=0.6)
    out = reverb(batch, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    torch.rand(len(batch), generator=g)  # the per-utterance apply draw comes first
    ir, _ = reverb.impulse_responses(len(batch), g)
    assert out.noisy_audio.shape == batch.noisy_audio.shape
    assert torch.equal(out.noisy_audio_len, batch.noisy_audio_len) and torch.equal(out.audio, batch.audio)
    for i in range(len(batch)):
        n = int(batch.audio_len[i])
        x = batch.noisy_audio[i, :n].double().numpy()
        wet = np.convolve(x, ir[i].double().numpy())[:n]
        wet *= math.sqrt((x ** 2).sum() / (wet ** 2).sum())
        assert np.allclose(out.noisy_audio[i, :n].numpy(), wet, atol=1e-4)
        assert torch.all(out.noisy_audio[i, n:] == 0.0)
    assert not torch.allclose(out.noisy_audio, batch.noisy_audio, atol=1e-2)


def test_inner_augmentor_runs_first_and_its_mix_level_is_kept() -> None:
    inner = {"name": "speaker_noise", "prob": 1.0, "noise_ratio": 1.0, "min_r_noise": 0.0, "max_r_noise": 0.0}
    batch = _batch(seed=5)
    mixed = nestkit.build("augmentor", inner)(batch, torch.Generator().manual_seed(6))
    out = _reverb(prob=1.0, inner=inner)(batch, torch.Generator().manual_seed(6))
    assert not torch.allclose(out.noisy_audio, mixed.noisy_audio, atol=1e-2)
    energy = lambda x: (x.double() ** 2).sum(1)  # noqa: E731
    assert torch.allclose(energy(out.noisy_audio), energy(mixed.noisy_audio), rtol=1e-4)


def test_same_seed_same_batch() -> None:
    batch = _batch(seed=7)
    reverb = _reverb(prob=0.5)
    a = reverb(batch, torch.Generator().manual_seed(1)).noisy_audio
    b = reverb(batch, torch.Generator().manual_seed(1)).noisy_audio
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [({"rt60_min": 0.9, "rt60_max": 0.5}, "rt60_min (0.9) must not exceed rt60_max (0.5)"),
     ({"ir_duration": 0.3}, "ir_duration (0.3) must be at least rt60_max (0.8)"),
     ({"inner": {"name": "nope"}}, "augmentor.inner.name: unknown augmentor 'nope'"),
     ({"prob": 2}, "augmentor.prob: input should be less than or equal to 1")],
)
def test_bad_sections_are_one_line_recipe_errors(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(RecipeError) as info:
        _reverb(**fields)
    assert needle in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_fast_fft_length_is_the_next_5_smooth_number() -> None:
    from nestkit_augment.room_reverb import fast_fft_length

    def smooth(m: int) -> bool:
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in (1, 2, 7, 97, 1000, 262999, 270999):
        f = fast_fft_length(n)
        assert f >= n and smooth(f) and not any(smooth(m) for m in range(n, f))
