"""Batch augmentors (kind ``augmentor``): mix noise or other speakers' speech into a batch.

Same parameters and meaning as NeMo's ``SpeakerNoiseAugmentation`` and
``MultiSpeakerNoiseAugmentation`` (``nemo.collections.asr.modules.ssl_modules.augmentation``),
computed for the whole padded batch at once with tensor ops, so the same code runs in the
loader workers (CPU) or on the training device. All randomness comes from the
``torch.Generator`` passed in.

Per utterance (chosen with probability ``prob``): a mixing length (``mix_rate`` of the
utterance), a source (the utterance's noise with probability ``noise_ratio`` or when the batch
has one utterance, else another utterance of the batch), and an energy ratio in dB drawn from
the noise or speech range. The source is scaled so that
``10*log10(E_audio / E_added) = ratio``, with NeMo's energy definitions (see each class).

Deliberate difference from NeMo 3.0.0: an utterance that is *not* chosen is left clean
(``noisy_audio == audio``); NeMo adds its raw, unscaled noise sample to it.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from pydantic import Field, model_validator

from nestkit.data.batch import AudioBatch
from nestkit.registry import Component, ComponentConfig


def _rand(n: int, g: torch.Generator) -> torch.Tensor:
    """(n,) float64 uniforms in [0, 1) on the generator's device."""
    return torch.rand(n, generator=g, device=g.device, dtype=torch.float64)


def _uniform(lo: float, hi: float, n: int, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * _rand(n, g)


def _below(n: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A uniform integer in [0, n) per entry (0 where n <= 0), like ``np.random.randint(n)``."""
    n = n.clamp(min=0)
    pick = torch.floor(_rand(n.shape[0], g) * n).long()
    return torch.minimum(pick, (n - 1).clamp(min=0))


def _energy(x: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Mean power of the first ``length`` samples of each row (0 for empty rows): (B,)."""
    t = torch.arange(x.shape[1], device=x.device)
    x = x.float()
    power = torch.where(t[None, :] < length[:, None], x * x, torch.zeros((), device=x.device)).sum(dim=1)
    return power / length.clamp(min=1)


def _window(
    t: torch.Tensor, start: torch.Tensor, seg: torch.Tensor, source: torch.Tensor, src_start: torch.Tensor, src_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Place ``source[(src_start + k) mod src_len]`` at positions ``start + k`` for k < ``seg``.

    ``t`` is ``arange(T)``; all other arguments are (B,) except ``source`` (B, T). Returns the
    (B, T) values (meaningful only inside) and the (B, T) boolean mask of placed positions.
    Index arithmetic is int32 (utterances stay far below 2**31 samples), which is twice as
    fast as int64 for the wrap-around remainder on CPU.
    """
    seg = torch.where(src_len > 0, seg, torch.zeros_like(seg))
    t32 = t.int()[None, :]
    inside = (t32 >= start.int()[:, None]) & (t32 < (start + seg).int()[:, None])
    k = t32 + (src_start - start).int()[:, None]
    idx = torch.remainder(k, src_len.clamp(min=1).int()[:, None]).long()
    return torch.gather(source, 1, idx), inside


def _scale(audio_energy: torch.Tensor, noise_energy: torch.Tensor, ratio_db: torch.Tensor) -> torch.Tensor:
    """Gain that puts the noise ``ratio_db`` below the audio (0 where there is no noise)."""
    denom = (10.0 ** (ratio_db / 10.0)) * noise_energy.double()
    safe = torch.where(noise_energy > 0, denom, torch.ones_like(denom))
    return torch.where(noise_energy > 0, torch.sqrt(audio_energy.double() / safe), torch.zeros_like(denom)).float()


def _batch_frame(
    batch: AudioBatch, prob: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """audio, lengths, row and sample indices, and which utterances are augmented (drawn first)."""
    audio = batch.audio
    rows = torch.arange(audio.shape[0], device=audio.device)
    t = torch.arange(audio.shape[1], device=audio.device)
    return audio, batch.audio_len, rows, t, _rand(audio.shape[0], g) < prob


def _source_and_ratio(c: SpeakerNoiseConfig, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per utterance: mix noise (True; always for a batch of one) or other speech, and the
    energy ratio in dB drawn from that source's range."""
    noise_mode = (_rand(n, g) < c.noise_ratio) | (n == 1)
    ratio = torch.where(
        noise_mode, _uniform(c.min_r_noise, c.max_r_noise, n, g), _uniform(c.min_r_speech, c.max_r_speech, n, g)
    )
    return noise_mode, ratio


def _mixed(batch: AudioBatch, signal: torch.Tensor, signal_energy: torch.Tensor, ratio: torch.Tensor,
           apply: torch.Tensor) -> AudioBatch:
    """The batch with ``signal`` added at ``ratio`` dB below the audio where ``apply``."""
    audio, length = batch.audio, batch.audio_len
    gain = _scale(_energy(audio, length), signal_energy, ratio) * apply
    return replace(batch, noisy_audio=audio + gain[:, None] * signal, noisy_audio_len=length.clone(), augmented=True)


class SpeakerNoiseConfig(ComponentConfig):
    """NeMo's SpeakerNoiseAugmentation parameters (same names and defaults)."""

    prob: float = Field(0.0, ge=0.0, le=1.0, description="probability that an utterance is augmented")
    noise_ratio: float = Field(0.0, ge=0.0, le=1.0, description="probability of mixing noise rather than another utterance's speech")
    min_r_speech: float = Field(-5.0, description="lowest speech-to-added-speech energy ratio, dB")
    max_r_speech: float = Field(5.0, description="highest speech-to-added-speech energy ratio, dB")
    min_r_noise: float = Field(-5.0, description="lowest speech-to-noise energy ratio, dB")
    max_r_noise: float = Field(20.0, description="highest speech-to-noise energy ratio, dB")
    min_mix_rate: float = Field(0.0, ge=0.0, le=1.0, description="shortest mixed part, as a fraction of the utterance")
    max_mix_rate: float = Field(1.0, ge=0.0, le=1.0, description="longest mixed part, as a fraction of the utterance")

    @model_validator(mode="after")
    def _ranges(self) -> SpeakerNoiseConfig:
        if self.min_r_speech > self.max_r_speech:
            raise ValueError(f"min_r_speech ({self.min_r_speech}) must not exceed max_r_speech ({self.max_r_speech})")
        if self.min_r_noise > self.max_r_noise:
            raise ValueError(f"min_r_noise ({self.min_r_noise}) must not exceed max_r_noise ({self.max_r_noise})")
        if self.min_mix_rate > self.max_mix_rate:
            raise ValueError(f"min_mix_rate ({self.min_mix_rate}) must not exceed max_mix_rate ({self.max_mix_rate})")
        return self


class MultiSpeakerNoiseConfig(SpeakerNoiseConfig):
    """NeMo's MultiSpeakerNoiseAugmentation parameters (same names and defaults)."""

    min_num_segments: int = Field(1, ge=1, description="fewest pieces the mixed part is cut into")
    max_num_segments: int = Field(5, ge=1, description="most pieces the mixed part is cut into")
    min_num_speakers: int = Field(1, ge=1, description="fewest other utterances mixed in (speech mode)")
    max_num_speakers: int = Field(4, ge=1, description="most other utterances mixed in (speech mode)")

    @model_validator(mode="after")
    def _counts(self) -> MultiSpeakerNoiseConfig:
        if self.min_num_segments > self.max_num_segments:
            raise ValueError(f"min_num_segments ({self.min_num_segments}) must not exceed max_num_segments ({self.max_num_segments})")
        if self.min_num_speakers > self.max_num_speakers:
            raise ValueError(f"min_num_speakers ({self.min_num_speakers}) must not exceed max_num_speakers ({self.max_num_speakers})")
        return self


class SpeakerNoiseAugmentor:
    """One mixed segment per chosen utterance, from its noise or one other utterance.

    Mixed length: ``randint(int(L*min_mix_rate), int(L*max_mix_rate))`` samples (or
    ``max(1, int(L*min_mix_rate))`` when the rates are equal), at a random start. A source
    no longer than that is repeated from its start; a longer one contributes a random window.
    Energies as in NeMo: audio over the utterance; noise over the whole source (over the
    repeated segment when the source was repeated).
    """

    def __init__(self, cfg: SpeakerNoiseConfig) -> None:
        self.cfg = cfg

    def __call__(self, batch: AudioBatch, generator: torch.Generator) -> AudioBatch:
        c, g = self.cfg, generator
        audio, length, rows, t, apply = _batch_frame(batch, c.prob, g)
        B, dev = audio.shape[0], audio.device
        lo = torch.floor(length.double() * c.min_mix_rate).long()
        hi = torch.floor(length.double() * c.max_mix_rate).long()
        if c.min_mix_rate < c.max_mix_rate:
            mix_len = lo + _below(hi - lo, g)
        else:
            mix_len = lo.clamp(min=1)
        mix_len = torch.minimum(mix_len, length)
        mix_start = _below(length - mix_len, g)
        noise_mode, ratio = _source_and_ratio(c, B, g)
        partner = (rows + 1 + _below(torch.full_like(rows, B - 1), g)) % B
        source = torch.where(noise_mode[:, None], batch.noise, audio[partner])
        src_len = torch.where(noise_mode, batch.noise_len, length[partner])
        repeat = src_len <= mix_len
        src_start = torch.where(repeat, torch.zeros_like(src_len), _below(src_len - mix_len, g))
        values, inside = _window(t, mix_start, mix_len, source, src_start, src_len)
        clip = torch.where(inside, values, torch.zeros((), device=dev))
        clip_energy = (clip * clip).sum(1) / mix_len.clamp(min=1)
        noise_energy = torch.where(repeat, clip_energy, _energy(source, src_len))
        return _mixed(batch, clip, noise_energy, ratio, apply)


class MultiSpeakerNoiseAugmentor:
    """The mixed part is cut into ``num_segments`` pieces placed in order at random positions.

    Piece lengths follow a multinomial split of the mixed length; in speech mode the pieces
    come from up to ``num_speakers`` other utterances (random windows, repeated when too
    short); in noise mode they are consecutive pieces of the utterance's noise. Energies as in
    NeMo: audio and the placed signal, both averaged over the utterance length.
    """

    def __init__(self, cfg: MultiSpeakerNoiseConfig) -> None:
        self.cfg = cfg

    def __call__(self, batch: AudioBatch, generator: torch.Generator) -> AudioBatch:
        c, g = self.cfg, generator
        audio, length, rows, t, apply = _batch_frame(batch, c.prob, g)
        B, dev = audio.shape[0], audio.device
        if c.min_mix_rate < c.max_mix_rate:
            rate = _uniform(c.min_mix_rate, c.max_mix_rate, B, g)
        else:
            rate = torch.full((B,), c.min_mix_rate, dtype=torch.float64, device=dev)
        mix_len = torch.minimum(torch.floor(length.double() * rate).long().clamp(min=1), length)
        num_seg = c.min_num_segments + _below(torch.full_like(rows, c.max_num_segments - c.min_num_segments + 1), g)
        num_spk = c.min_num_speakers + _below(torch.full_like(rows, c.max_num_speakers - c.min_num_speakers + 1), g)
        num_cand = num_spk.clamp(max=B - 1).clamp(min=1)
        noise_mode, ratio = _source_and_ratio(c, B, g)
        # other utterances of the batch in a random order per row (itself last)
        keys = torch.rand(B, B, generator=g, device=dev)
        keys[rows, rows] = 2.0
        order = keys.argsort(dim=1)
        placed = torch.zeros_like(audio)
        remaining = mix_len.float()
        min_start = torch.zeros_like(length)
        max_start = length - mix_len
        used = torch.zeros_like(length)  # noise consumed so far (noise pieces are consecutive)
        sid = torch.zeros_like(length)
        for j in range(c.max_num_segments):  # a few segments, each vectorised over the batch
            active = j < num_seg
            p = torch.where(active, 1.0 / (num_seg - j).clamp(min=1).float(), torch.zeros_like(remaining))
            seg = torch.binomial(remaining, p, generator=g).long()
            remaining = remaining - seg.float()
            start = torch.where(min_start < max_start, min_start + _below(max_start - min_start, g), min_start)
            spk = order[rows, sid]
            spk_len = length[spk]
            speech_start = torch.where(seg < spk_len, _below(spk_len - seg, g), torch.zeros_like(seg))
            source = torch.where(noise_mode[:, None], batch.noise, audio.index_select(0, spk))
            src_len = torch.where(noise_mode, batch.noise_len, spk_len)
            src_start = torch.where(noise_mode, used, speech_start)
            values, inside = _window(t, start, seg, source, src_start, src_len)
            placed = torch.where(inside, values, placed)
            min_start = start + seg
            max_start = max_start + seg
            used = used + seg
            sid = sid + active.long()
            sid = torch.where(sid >= num_cand, _below(num_cand, g), sid)
        noise_energy = (placed * placed).sum(1) / length.clamp(min=1)
        return _mixed(batch, placed, noise_energy, ratio, apply)


def components() -> list[Component]:
    return [
        Component(
            kind="augmentor",
            name="speaker_noise",
            factory=SpeakerNoiseAugmentor,
            config=SpeakerNoiseConfig,
            summary="NeMo SpeakerNoiseAugmentation: one segment of noise or another utterance, batched",
        ),
        Component(
            kind="augmentor",
            name="multi_speaker_noise",
            factory=MultiSpeakerNoiseAugmentor,
            config=MultiSpeakerNoiseConfig,
            summary="NeMo MultiSpeakerNoiseAugmentation: several segments from noise or other speakers, batched",
        ),
    ]
