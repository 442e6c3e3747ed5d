"""Audio decoding: soundfile reads, mono down-mix, cached resampling, minimum-length padding.

Every failure is an :class:`AudioReadError` carrying a short reason (``missing``, ``empty``,
``unreadable``, ``non_finite``) so the dataset can skip the item and count why.
"""

from __future__ import annotations

import functools
import io
import math
import os
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch
import torchaudio


class AudioReadError(Exception):
    """An utterance that cannot be used; ``reason`` is the counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


Source = str | os.PathLike[str] | BinaryIO | bytes
MIN_RATE, MAX_RATE = 100, 768_000  # sample rates a real recording can have
MAX_CHANNELS = 64
MAX_SAMPLES = 2**29  # 2 GiB of float32: far beyond any utterance or noise clip
MAX_RESAMPLE_RATIO_PRODUCT = 10**7  # 44.1 kHz -> 16 kHz is 441 x 160 = 70,560


def read_audio(
    source: Source,
    *,
    sample_rate: int,
    offset: float = 0.0,
    duration: float | None = None,
    channel_selector: int | None = None,
) -> torch.Tensor:
    """Decode ``duration`` seconds from ``offset`` as mono float32 at ``sample_rate``: (T,).

    Only the requested frames are decoded (soundfile seeks). Multi-channel audio is averaged
    unless ``channel_selector`` picks a channel.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    is_path = isinstance(source, (str, os.PathLike))
    name = str(source) if is_path else "<stream>"
    try:
        with sf.SoundFile(source) as f:
            rate = f.samplerate
            # A corrupt header must not make us allocate what it claims.
            if not MIN_RATE <= rate <= MAX_RATE or not 1 <= f.channels <= MAX_CHANNELS:
                raise AudioReadError("unreadable", f"{name}: implausible header ({rate} Hz, {f.channels} channels)")
            start = min(int(round(offset * rate)), f.frames)
            available = f.frames - start
            frames = available if duration is None else min(int(round(duration * rate)), available)
            if frames * f.channels > MAX_SAMPLES:
                raise AudioReadError("unreadable", f"{name}: header declares {f.frames} frames x {f.channels} channels")
            if start:
                f.seek(start)
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise AudioReadError("missing", name) from None
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError, EOFError, MemoryError) as exc:
        if is_path and not os.path.exists(name):
            raise AudioReadError("missing", name) from None
        if is_path and os.path.getsize(name) == 0:
            raise AudioReadError("empty", name) from None
        raise AudioReadError("unreadable", f"{name}: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    if data.shape[0] == 0:
        raise AudioReadError("empty", str(name))
    if channel_selector is not None:
        if channel_selector >= data.shape[1]:
            raise AudioReadError("unreadable", f"{name}: no channel {channel_selector} (has {data.shape[1]})")
        mono = data[:, channel_selector]
    else:
        mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioReadError("non_finite", str(name))
    audio = torch.from_numpy(np.ascontiguousarray(mono))
    return resample(audio, rate, sample_rate)


@functools.lru_cache(maxsize=32)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """One Resample module per rate pair: its sinc kernel is computed once per process."""
    return torchaudio.transforms.Resample(orig, new)


def resample(audio: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """(T,) at ``orig`` Hz -> (T',) at ``new`` Hz (torchaudio's band-limited sinc method)."""
    if orig == new:
        return audio
    g = math.gcd(int(orig), int(new))
    if (orig // g) * (new // g) > MAX_RESAMPLE_RATIO_PRODUCT:
        # torchaudio builds a (new/g) x (orig/g) table: for coprime odd rates that is gigabytes.
        raise AudioReadError("unreadable", f"unsupported sample rate {orig} Hz (no small ratio to {new} Hz)")
    with torch.no_grad():
        return _resampler(int(orig), int(new))(audio)


def pad_to_length(audio: torch.Tensor, length: int, mode: str = "repeat") -> torch.Tensor:
    """Extend (T,) to at least ``length`` samples by repeating it or by appending zeros."""
    n = audio.shape[0]
    if n >= length or n == 0:
        return audio
    if mode == "zero":
        return torch.nn.functional.pad(audio, (0, length - n))
    return audio.repeat(-(-length // n))[:length]


def tile_to_length(audio: torch.Tensor, length: int) -> torch.Tensor:
    """Exactly ``length`` samples: repeat a short clip, cut a long one."""
    n = audio.shape[0]
    if n == 0:
        return torch.zeros(length, dtype=audio.dtype)
    if n < length:
        audio = audio.repeat(-(-length // n))
    return audio[:length]
