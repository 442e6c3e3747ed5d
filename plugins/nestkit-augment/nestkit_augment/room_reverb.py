"""Synthetic room reverberation of the noisy view (kind ``augmentor``).

Each chosen utterance (probability ``prob``) is convolved with its own synthetic room impulse
response: an optional direct path (a unit impulse at t = 0), then, after a pre-delay, Gaussian
noise under an exponential envelope whose energy falls by 60 dB in RT60 seconds (drawn
uniformly per utterance). The reverberant tail is scaled to a drawn direct-to-reverberant
ratio (DRR). Only ``noisy_audio`` is reverberated, so with the clean audio as the target the
model also learns to dereverberate. Lengths are kept: the reverb tail past an utterance's end
is cut, and the result is rescaled to the energy the noisy view had, so the noise/speech mix
levels chosen by an inner augmentor stay as drawn.

Everything is batched: one noise draw (B, L), one ``torchaudio.functional.fftconvolve``, and
all randomness comes from the ``torch.Generator`` passed in (CPU in loader workers, or the
training device).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
import torchaudio
from pydantic import Field, model_validator
from torch import Tensor

import nestkit
from nestkit import AudioBatch, BatchAugmentor

DECAY_60DB = 3.0 * math.log(10.0)  # amplitude exp(-DECAY_60DB * t / rt60): energy -60 dB at rt60


class RoomReverbConfig(nestkit.ComponentConfig):
    """Synthetic-RIR reverberation of the noisy view."""

    prob: float = Field(0.5, ge=0.0, le=1.0, description="probability that an utterance is reverberated")
    sample_rate: int = Field(16000, gt=0, description="audio sample rate in Hz")
    rt60_min: float = Field(0.2, gt=0.0, description="shortest reverberation time (60 dB decay), seconds")
    rt60_max: float = Field(0.8, gt=0.0, description="longest reverberation time (60 dB decay), seconds")
    ir_duration: float = Field(1.0, gt=0.0, description="impulse response length in seconds (at least rt60_max)")
    direct_path: bool = Field(True, description="start the response with the direct sound (unit impulse at t = 0)")
    pre_delay_min: float = Field(0.002, ge=0.0, description="shortest gap between direct sound and reverberant tail, seconds")
    pre_delay_max: float = Field(0.02, ge=0.0, description="longest gap between direct sound and reverberant tail, seconds")
    drr_min: float = Field(0.0, description="lowest direct-to-reverberant energy ratio, dB (with direct_path)")
    drr_max: float = Field(10.0, description="highest direct-to-reverberant energy ratio, dB (with direct_path)")
    inner: dict[str, Any] | None = nestkit.section_field(
        "augmentor", None, "an augmentor run first (e.g. multi_speaker_noise); its noisy view is then reverberated"
    )

    @model_validator(mode="after")
    def _ranges(self) -> RoomReverbConfig:
        for low, high in (("rt60_min", "rt60_max"), ("pre_delay_min", "pre_delay_max"), ("drr_min", "drr_max")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) must not exceed {high} ({getattr(self, high)})")
        if self.ir_duration < self.rt60_max:
            raise ValueError(f"ir_duration ({self.ir_duration}) must be at least rt60_max ({self.rt60_max}) so the tail decays 60 dB")
        if self.direct_path and self.pre_delay_max >= self.ir_duration:
            raise ValueError(f"pre_delay_max ({self.pre_delay_max}) must be shorter than ir_duration ({self.ir_duration})")
        return self


def _uniform(lo: float, hi: float, n: int, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device, dtype=torch.float64)


def fast_fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFTs of such sizes are several times faster than of an
    arbitrary size (a prime-heavy length can cost 10x)."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _valid_energy(x: Tensor, valid: Tensor) -> Tensor:
    return torch.where(valid, x * x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(1)


class RoomReverb:
    """``reverb(batch, generator) -> batch`` with ``noisy_audio`` reverberated (see the module doc)."""

    def __init__(self, cfg: RoomReverbConfig, inner: BatchAugmentor | None = None) -> None:
        self.cfg = cfg
        self.ir_length = max(2, int(round(cfg.ir_duration * cfg.sample_rate)))
        self.inner = inner  # the augmentor built from cfg.inner, run first

    def impulse_responses(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` impulse responses (n, ir_length) float32 and their drawn RT60s (n,) in seconds."""
        c, g = self.cfg, generator
        sr = c.sample_rate
        rt60 = _uniform(c.rt60_min, c.rt60_max, n, g)
        drr_db = _uniform(c.drr_min, c.drr_max, n, g)
        if c.direct_path:
            onset = torch.round(_uniform(c.pre_delay_min, c.pre_delay_max, n, g) * sr).long().clamp(min=1)
        else:
            onset = torch.zeros(n, dtype=torch.long, device=g.device)
        noise = torch.randn(n, self.ir_length, generator=g, device=g.device, dtype=torch.float64)
        k = torch.arange(self.ir_length, device=g.device)
        after = (k[None, :] - onset[:, None]).double()  # samples since the tail's onset
        envelope = torch.where(after >= 0, torch.exp(-DECAY_60DB * after.clamp(min=0) / (rt60[:, None] * sr)), 0.0)
        tail = noise * envelope
        tail = tail / (tail * tail).sum(1, keepdim=True).sqrt().clamp_min(1e-12)  # unit energy
        if c.direct_path:
            direct = (k[None, :] == 0).double()
            ir = direct + torch.sqrt(10.0 ** (-drr_db / 10.0))[:, None] * tail
        else:
            ir = tail
        return ir.float(), rt60

    def __call__(self, batch: AudioBatch, generator: torch.Generator) -> AudioBatch:
        if self.inner is not None:
            batch = self.inner(batch, generator)
        noisy, length = batch.noisy_audio, batch.noisy_audio_len
        b, t = noisy.shape
        apply = torch.rand(b, generator=generator, device=generator.device) < self.cfg.prob
        ir, _ = self.impulse_responses(b, generator)
        # zero-pad so the full convolution has a fast FFT length; only the first t samples are kept
        pad = fast_fft_length(t + self.ir_length - 1) - (t + self.ir_length - 1)
        dry = torch.nn.functional.pad(noisy.float(), (0, pad))
        wet = torchaudio.functional.fftconvolve(dry, ir.to(noisy.device))[:, :t]
        valid = torch.arange(t, device=noisy.device)[None, :] < length[:, None]
        wet = torch.where(valid, wet, torch.zeros((), device=wet.device))
        gain = torch.sqrt(_valid_energy(noisy.float(), valid) / _valid_energy(wet, valid).clamp_min(1e-20))
        out = torch.where(apply[:, None], wet * gain[:, None], noisy.float()).to(noisy.dtype)
        return replace(batch, noisy_audio=out, noisy_audio_len=length.clone(), augmented=True)


def build_room_reverb(cfg: RoomReverbConfig, *, registry: nestkit.Registry) -> RoomReverb:
    """``cfg.inner`` is built from the registry ``cfg`` was validated with."""
    inner = registry.build("augmentor", cfg.inner, key="inner") if cfg.inner else None
    return RoomReverb(cfg, inner)
