"""Log-mel features with NeMo's ``AudioToMelSpectrogramPreprocessor`` semantics.

Every step and constant follows NeMo's ``FilterbankFeatures`` so features match to float
precision: dither (training only, before pre-emphasis), pre-emphasis with samples past each
length zeroed, a centred zero-padded STFT, power spectrum, Slaney mel filterbank, log with an
additive guard, per-utterance normalisation over valid frames, frames past the valid length
set to ``pad_value``, and time padded to a multiple of ``pad_to``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torchaudio
from pydantic import Field, model_validator
from torch import Tensor, nn

from nestkit.registry import Component, ComponentConfig

_WINDOWS = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
    "bartlett": torch.bartlett_window,
}
NORM_EPS = 1e-5  # NeMo adds this to the standard deviation before dividing


class MelSpectrogramConfig(ComponentConfig):
    """NeMo's ``AudioToMelSpectrogramPreprocessor`` keys (the subset NEST recipes use)."""

    sample_rate: int = Field(16000, gt=0, description="audio sample rate in Hz")
    window_size: float = Field(0.02, gt=0, description="analysis window in seconds")
    window_stride: float = Field(0.01, gt=0, description="hop in seconds")
    n_window_size: int | None = Field(None, gt=0, description="window in samples (overrides window_size)")
    n_window_stride: int | None = Field(None, gt=0, description="hop in samples (overrides window_stride)")
    window: Literal["hann", "hamming", "blackman", "bartlett", "none"] = Field("hann", description="symmetric window function")
    normalize: Literal["per_feature", "all_features", "none"] | None = Field("per_feature", description="per-utterance normalisation over valid frames")
    n_fft: int | None = Field(None, gt=0, description="FFT size (default: next power of two of the window)")
    preemph: float | None = Field(0.97, description="pre-emphasis coefficient (null: off)")
    features: int = Field(64, gt=0, description="number of mel bands")
    lowfreq: float = Field(0.0, ge=0, description="lowest mel filter edge in Hz")
    highfreq: float | None = Field(None, gt=0, description="highest mel filter edge in Hz (default: sample_rate / 2)")
    log: bool = Field(True, description="take the log of the mel energies")
    log_zero_guard_type: Literal["add", "clamp"] = Field("add", description="how the log guard is applied")
    log_zero_guard_value: float | Literal["tiny", "eps"] = Field(2**-24, description="the log guard value")
    dither: float = Field(1e-5, ge=0, description="Gaussian dither amplitude, training only")
    pad_to: int = Field(16, ge=0, description="pad time to a multiple of this (0: off)")
    frame_splicing: Literal[1] = Field(1, description="frame stacking; only 1 (off) is supported")
    exact_pad: Literal[False] = Field(False, description="only the centred STFT is supported")
    pad_value: float = Field(0.0, description="value of frames past the valid length")
    mag_power: float = Field(2.0, gt=0, description="power applied to the STFT magnitude")
    mel_norm: Literal["slaney"] | None = Field("slaney", description="mel filter normalisation")

    @model_validator(mode="after")
    def _check(self) -> MelSpectrogramConfig:
        win = self.n_window_size or int(self.window_size * self.sample_rate)
        n_fft = self.n_fft or 2 ** math.ceil(math.log2(win))
        if win > n_fft:
            raise ValueError(f"the window ({win} samples) is longer than n_fft ({n_fft})")
        high = self.highfreq or self.sample_rate / 2
        if high > self.sample_rate / 2 or self.lowfreq >= high:
            raise ValueError(f"mel range lowfreq={self.lowfreq} .. highfreq={high} must lie in 0 .. sample_rate/2")
        return self


def slaney_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float, norm: str | None) -> Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-scale mel filterbank (librosa's default, as NeMo uses)."""
    fb = torchaudio.functional.melscale_fbanks(
        n_freqs=n_fft // 2 + 1, f_min=f_min, f_max=f_max, n_mels=n_mels,
        sample_rate=sample_rate, norm=norm, mel_scale="slaney",
    )
    return fb.T.contiguous()


class MelSpectrogram(nn.Module):
    """Audio (B, T) + lengths -> log-mel features (B, features, T') + valid frame counts.

    Buffers ``window`` (win_length,) and ``fb`` (1, features, n_fft//2+1) mirror NeMo's
    ``preprocessor.featurizer`` buffers so state dicts convert one to one.
    """

    def __init__(self, cfg: MelSpectrogramConfig) -> None:
        super().__init__()
        self.sample_rate = cfg.sample_rate
        self.win_length = cfg.n_window_size or int(cfg.window_size * cfg.sample_rate)
        self.hop_length = cfg.n_window_stride or int(cfg.window_stride * cfg.sample_rate)
        self.n_fft = cfg.n_fft or 2 ** math.ceil(math.log2(self.win_length))
        self.features = cfg.features
        self.normalize = cfg.normalize if cfg.normalize not in (None, "none") else None
        self.preemph = cfg.preemph
        self.log = cfg.log
        self.guard_type = cfg.log_zero_guard_type
        self.guard_value = cfg.log_zero_guard_value
        self.dither = cfg.dither
        self.pad_to = cfg.pad_to
        self.pad_value = cfg.pad_value
        self.mag_power = cfg.mag_power
        window_fn = _WINDOWS.get(cfg.window)
        window = window_fn(self.win_length, periodic=False) if window_fn else torch.ones(self.win_length)
        self.register_buffer("window", window)
        fb = slaney_filterbank(self.n_fft, cfg.features, cfg.sample_rate, cfg.lowfreq, cfg.highfreq or cfg.sample_rate / 2, cfg.mel_norm)
        self.register_buffer("fb", fb.unsqueeze(0))

    def valid_frames(self, audio_len: Tensor) -> Tensor:
        """Frames counted as valid for ``audio_len`` samples: ``audio_len // hop`` (NeMo's rule)."""
        pad = self.n_fft // 2 * 2
        return torch.div(audio_len + pad - self.n_fft, self.hop_length, rounding_mode="floor").long()

    def _guard(self, x: Tensor) -> float:
        if isinstance(self.guard_value, str):
            info = torch.finfo(x.dtype)
            return info.tiny if self.guard_value == "tiny" else info.eps
        return self.guard_value

    @torch.no_grad()
    def forward(self, audio: Tensor, audio_len: Tensor) -> tuple[Tensor, Tensor]:
        """audio (B, T) float, audio_len (B,) -> (features (B, F, T'), lengths (B,) int64)."""
        with torch.autocast(audio.device.type, enabled=False):
            x = audio.float()
            frames = self.valid_frames(audio_len)
            if self.training and self.dither > 0:
                x = x + self.dither * torch.randn_like(x)
            if self.preemph is not None:
                x = torch.cat((x[:, :1], x[:, 1:] - self.preemph * x[:, :-1]), dim=1)
                inside = torch.arange(x.shape[1], device=x.device)[None, :] < audio_len[:, None]
                x = x.masked_fill(~inside, 0.0)
            spec = torch.stft(
                x, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                window=self.window.float(), center=True, pad_mode="constant", return_complex=True,
            )
            # NeMo takes the magnitude and raises it to mag_power (not |z|^2 directly). re^2 + im^2
            # on the real/imag views gives the same bits as squaring view_as_real and summing its
            # last axis, without that slow size-2 reduction (4x faster on CPU).
            mag = (spec.real.square() + spec.imag.square()).sqrt()
            if self.mag_power != 1.0:
                mag = mag.pow(self.mag_power)
            x = torch.matmul(self.fb.float(), mag)
            if self.log:
                guard = self._guard(x)
                x = torch.log(x + guard) if self.guard_type == "add" else torch.log(x.clamp_min(guard))
            valid = torch.arange(x.shape[-1], device=x.device)[None, :] < frames[:, None]
            if self.normalize is not None:
                x = normalize_features(x, valid, self.normalize)
            x = x.masked_fill(~valid[:, None, :], self.pad_value)
            if self.pad_to > 0 and x.shape[-1] % self.pad_to:
                x = nn.functional.pad(x, (0, self.pad_to - x.shape[-1] % self.pad_to), value=self.pad_value)
        return x, frames


def normalize_features(x: Tensor, valid: Tensor, mode: str) -> Tensor:
    """Normalise (B, F, T) over each utterance's valid frames: unbiased std plus 1e-5."""
    mask = valid[:, None, :]
    count = valid.sum(1).to(x.dtype)
    if mode == "per_feature":
        mean = torch.where(mask, x, 0.0).sum(2) / count[:, None]
        var = torch.where(mask, x - mean[:, :, None], 0.0).pow(2).sum(2) / (count[:, None] - 1.0)
        std = torch.nan_to_num(var.sqrt(), nan=0.0) + NORM_EPS
        return (x - mean[:, :, None]) / std[:, :, None]
    n = count * x.shape[1]
    mean = torch.where(mask, x, 0.0).sum((1, 2)) / n
    var = torch.where(mask, x - mean[:, None, None], 0.0).pow(2).sum((1, 2)) / (n - 1.0)
    std = torch.nan_to_num(var.sqrt(), nan=0.0) + NORM_EPS
    return (x - mean[:, None, None]) / std[:, None, None]


def components() -> list[Component]:
    return [
        Component(
            kind="preprocessor", name="mel_spectrogram", factory=MelSpectrogram, config=MelSpectrogramConfig,
            summary="log-mel features exactly as NeMo's AudioToMelSpectrogramPreprocessor",
        )
    ]
