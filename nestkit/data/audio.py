"""Audio decoding: soundfile reads, mono down-mix, cached resampling, minimum-length padding.

Every failure is an :class:`AudioReadError` carrying a short reason (``missing``, ``empty``,
``unreadable``, ``non_finite``) so the dataset can skip the item and count why.
"""

from __future__ import annotations

import functools
import io
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
    name = source if isinstance(source, (str, os.PathLike)) else "<stream>"
    try:
        with sf.SoundFile(source) as f:
            rate = f.samplerate
            start = int(round(offset * rate))
            frames = -1 if duration is None else int(round(duration * rate))
            if start:
                f.seek(min(start, f.frames))
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise AudioReadError("missing", str(name)) from None
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError, EOFError) as exc:
        if isinstance(name, (str, os.PathLike)) and not os.path.exists(name):
            raise AudioReadError("missing", str(name)) from None
        if isinstance(name, (str, os.PathLike)) and os.path.getsize(name) == 0:
            raise AudioReadError("empty", str(name)) from None
        raise AudioReadError("unreadable", f"{name}: {' '.join(str(exc).split())}") from None
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
