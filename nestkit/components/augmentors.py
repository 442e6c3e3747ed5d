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

Where the work happens: on the CPU (loader workers) only real samples are touched: each mixed
segment is one contiguous slice of its utterance and each energy a dot product over the valid
samples, so a batch that is 80% padding costs what its speech costs (:class:`_Rows`). On an
accelerator the same draws are placed with fixed-shape (B, T) ops, which need no host sync
inside the training step (:class:`_Dense`). Both give the same result up to float rounding of
the energy sums, and leave the padding zero.

Deliberate difference from NeMo 3.0.0: an utterance that is *not* chosen is left clean
(``noisy_audio == audio``); NeMo adds its raw, unscaled noise sample to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


@dataclass(frozen=True)
class _Segments:
    """Where signal is placed, per (segment, utterance), each (S, B) integer tensors (``from_noise`` bool):
    samples ``start + k`` (k < ``count``) of row b get ``source[(src_start + k) mod src_len]``,
    the source being the row's noise or utterance ``src_row``'s audio."""

    start: torch.Tensor
    count: torch.Tensor
    from_noise: torch.Tensor
    src_row: torch.Tensor
    src_start: torch.Tensor
    src_len: torch.Tensor

    @staticmethod
    def stack(parts: list[dict[str, torch.Tensor]]) -> _Segments:
        return _Segments(**{k: torch.stack([p[k] for p in parts]) for k in parts[0]})


class _Dense:
    """(B, T) ops: fixed shapes, no host sync (accelerators)."""

    def __init__(self, batch: AudioBatch) -> None:
        self.batch = batch
        self.t = torch.arange(batch.audio.shape[1], device=batch.audio.device)

    def energy(self, x: torch.Tensor, length: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Mean power of the first ``length`` samples of each row (0 for empty rows): (B,)."""
        x = x.float()
        power = torch.where(self.t[None, :] < length[:, None], x * x, torch.zeros((), device=x.device)).sum(dim=1)
        return power / length.clamp(min=1)

    def place(self, seg: _Segments, rows: torch.Tensor) -> torch.Tensor:
        """Builds the placed signal; returns its summed power per row (B,)."""
        b = self.batch
        self.placed = torch.zeros_like(b.audio)
        for j in range(seg.start.shape[0]):
            source = torch.where(seg.from_noise[j][:, None], b.noise, b.audio.index_select(0, seg.src_row[j]))
            values, inside = _window(self.t, seg.start[j], seg.count[j], source, seg.src_start[j], seg.src_len[j])
            self.placed = torch.where(inside, values, self.placed)
        return (self.placed * self.placed).sum(1)

    def mixed(self, gain: torch.Tensor) -> torch.Tensor:
        return self.batch.audio + gain[:, None] * self.placed


class _Rows:
    """CPU (loader workers): contiguous slices of the real samples, one per utterance and segment.

    A slice op runs at memory speed while a gather over flat indices costs several passes per
    sample, so on the CPU a short loop over the batch's rows (B x segments slices, each op
    vectorised over its samples) is the fast way to touch only real samples.
    """

    def __init__(self, batch: AudioBatch) -> None:
        self.batch = batch
        self.pieces: list[tuple[int, int, torch.Tensor]] = []  # (row, start, values)

    def energy(self, x: torch.Tensor, length: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Mean power over each row's first ``length`` samples, computed for ``rows`` only (0 elsewhere)."""
        power = [0.0] * x.shape[0]
        for b, (n, use) in enumerate(zip(length.tolist(), rows.tolist())):
            if use and n:
                v = x[b, :n].double()
                power[b] = float(torch.dot(v, v))
        return (torch.tensor(power, dtype=torch.float64) / length.clamp(min=1)).float()

    def place(self, seg: _Segments, rows: torch.Tensor) -> torch.Tensor:
        b = self.batch
        power = [0.0] * b.audio.shape[0]
        columns = [t.T.tolist() for t in (seg.start, seg.count, seg.from_noise, seg.src_row, seg.src_start, seg.src_len)]
        for row, use in enumerate(rows.tolist()):
            if not use:
                continue
            for start, count, from_noise, src_row, src_start, src_len in zip(*(c[row] for c in columns)):
                if count <= 0 or src_len <= 0:
                    continue
                source = b.noise[row] if from_noise else b.audio[src_row]
                values = _cyclic(source[:src_len], src_start % src_len, count)
                v = values.double()
                power[row] += float(torch.dot(v, v))
                self.pieces.append((row, start, values))
        return torch.tensor(power, dtype=torch.float64).float()

    def mixed(self, gain: torch.Tensor) -> torch.Tensor:
        out = self.batch.audio.clone()
        scale = gain.tolist()
        for row, start, values in self.pieces:
            target = out[row, start : start + values.shape[0]]
            target.add_(values, alpha=scale[row])
        return out


def _cyclic(source: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """``count`` samples of ``source`` read cyclically from index ``first``."""
    n = source.shape[0]
    if first + count <= n:
        return source[first : first + count]
    rolled = torch.cat([source[first:], source[:first]])
    return rolled.repeat(-(-count // n))[:count]


def _layout(batch: AudioBatch) -> _Dense | _Rows:
    return _Rows(batch) if batch.audio.device.type == "cpu" else _Dense(batch)


def _scale(audio_energy: torch.Tensor, noise_energy: torch.Tensor, ratio_db: torch.Tensor) -> torch.Tensor:
    """Gain that puts the noise ``ratio_db`` below the audio (0 where there is no noise)."""
    denom = (10.0 ** (ratio_db / 10.0)) * noise_energy.double()
    safe = torch.where(noise_energy > 0, denom, torch.ones_like(denom))
    return torch.where(noise_energy > 0, torch.sqrt(audio_energy.double() / safe), torch.zeros_like(denom)).float()


def _batch_frame(batch: AudioBatch, prob: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """lengths, row indices, and which utterances are augmented (drawn first)."""
    rows = torch.arange(batch.audio.shape[0], device=batch.audio.device)
    return batch.audio_len, rows, _rand(batch.audio.shape[0], g) < prob


def _source_and_ratio(c: SpeakerNoiseConfig, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per utterance: mix noise (True; always for a batch of one) or other speech, and the
    energy ratio in dB drawn from that source's range."""
    noise_mode = (_rand(n, g) < c.noise_ratio) | (n == 1)
    ratio = torch.where(
        noise_mode, _uniform(c.min_r_noise, c.max_r_noise, n, g), _uniform(c.min_r_speech, c.max_r_speech, n, g)
    )
    return noise_mode, ratio


def _mixed(batch: AudioBatch, layout: _Dense | _Rows, audio_energy: torch.Tensor, signal_energy: torch.Tensor,
           ratio: torch.Tensor, apply: torch.Tensor) -> AudioBatch:
    """The batch with the placed signal added at ``ratio`` dB below the audio where ``apply``."""
    gain = _scale(audio_energy, signal_energy, ratio) * apply
    return replace(batch, noisy_audio=layout.mixed(gain), noisy_audio_len=batch.audio_len.clone(), augmented=True)


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
        length, rows, apply = _batch_frame(batch, c.prob, g)
        B = rows.shape[0]
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
        src_len = torch.where(noise_mode, batch.noise_len, length[partner])
        repeat = src_len <= mix_len
        src_start = torch.where(repeat, torch.zeros_like(src_len), _below(src_len - mix_len, g))
        layout = _layout(batch)
        segment = {"start": mix_start, "count": mix_len, "from_noise": noise_mode, "src_row": partner,
                   "src_start": src_start, "src_len": src_len}
        clip_energy = layout.place(_Segments.stack([segment]), apply) / mix_len.clamp(min=1)
        audio_energy = layout.energy(batch.audio, length, torch.ones_like(apply))
        noise_energy = layout.energy(batch.noise, batch.noise_len, apply & noise_mode & ~repeat)
        source_energy = torch.where(noise_mode, noise_energy, audio_energy[partner])
        return _mixed(batch, layout, audio_energy, torch.where(repeat, clip_energy, source_energy), ratio, apply)


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
        length, rows, apply = _batch_frame(batch, c.prob, g)
        B, dev = rows.shape[0], rows.device
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
        remaining = mix_len.float()
        min_start = torch.zeros_like(length)
        max_start = length - mix_len
        used = torch.zeros_like(length)  # noise consumed so far (noise pieces are consecutive)
        sid = torch.zeros_like(length)
        segments = []
        for j in range(c.max_num_segments):  # a few segments, each vectorised over the batch
            active = j < num_seg
            p = torch.where(active, 1.0 / (num_seg - j).clamp(min=1).float(), torch.zeros_like(remaining))
            seg = torch.binomial(remaining, p, generator=g).long()
            remaining = remaining - seg.float()
            start = torch.where(min_start < max_start, min_start + _below(max_start - min_start, g), min_start)
            spk = order[rows, sid]
            spk_len = length[spk]
            speech_start = torch.where(seg < spk_len, _below(spk_len - seg, g), torch.zeros_like(seg))
            segments.append({"start": start, "count": seg, "from_noise": noise_mode, "src_row": spk,
                             "src_start": torch.where(noise_mode, used, speech_start),
                             "src_len": torch.where(noise_mode, batch.noise_len, spk_len)})
            min_start = start + seg
            max_start = max_start + seg
            used = used + seg
            sid = sid + active.long()
            sid = torch.where(sid >= num_cand, _below(num_cand, g), sid)
        layout = _layout(batch)
        noise_energy = layout.place(_Segments.stack(segments), apply) / length.clamp(min=1)
        return _mixed(batch, layout, layout.energy(batch.audio, length, apply), noise_energy, ratio, apply)


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
