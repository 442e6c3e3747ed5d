"""Noise segments for the denoising objective, drawn per utterance from a noise manifest.

Each request returns exactly ``length`` samples: a random window of a longer noise clip, or a
shorter clip repeated. Decoded clips are kept in a bounded in-memory pool (least recently used
first out), so a small noise set is decoded once per worker; clips longer than the pool are
read window by window from disk. Unreadable noise files are dropped from the draw and counted.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from nestkit.data.audio import AudioReadError, read_audio, tile_to_length
from nestkit.data.manifest import Manifest


class NoiseSource:
    """Draws noise segments; ``manifest=None`` gives silence (zeros)."""

    def __init__(
        self,
        manifest: Manifest | None,
        *,
        sample_rate: int,
        pool_seconds: float = 600.0,
    ) -> None:
        self.manifest = manifest
        self.sample_rate = sample_rate
        self.pool_samples = int(pool_seconds * sample_rate)
        self._pool: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._pooled = 0
        self._bad: set[int] = set()
        self.failures: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self.manifest is not None and len(self._bad) < len(self.manifest)

    def segment(self, length: int, rng: np.random.Generator) -> torch.Tensor:
        """(length,) float32 noise; zeros when there is no (usable) noise."""
        if not self.enabled or length <= 0:
            return torch.zeros(max(length, 0))
        assert self.manifest is not None
        for _ in range(8):  # a few redraws if noise files turn out to be unreadable
            k = int(rng.integers(len(self.manifest)))
            if k in self._bad:
                continue
            try:
                return self._draw(k, length, rng)
            except AudioReadError as err:
                self._bad.add(k)
                key = f"noise_{err.reason}"
                self.failures[key] = self.failures.get(key, 0) + 1
        return torch.zeros(length)

    def _draw(self, k: int, length: int, rng: np.random.Generator) -> torch.Tensor:
        assert self.manifest is not None
        clip = self._pool.get(k)
        if clip is not None:
            self._pool.move_to_end(k)
        else:
            need = length / self.sample_rate
            seconds = float(self.manifest.durations[k])
            if seconds * self.sample_rate > self.pool_samples:
                # too big to keep: read only a random window of it
                start = float(rng.uniform(0.0, max(seconds - need, 0.0)))
                window = read_audio(
                    self.manifest.paths[k],
                    sample_rate=self.sample_rate,
                    offset=float(self.manifest.offsets[k]) + start,
                    duration=min(need, seconds),
                )
                return tile_to_length(window, length)
            clip = read_audio(
                self.manifest.paths[k],
                sample_rate=self.sample_rate,
                offset=float(self.manifest.offsets[k]),
                duration=seconds,
            )
            self._remember(k, clip)
        n = clip.shape[0]
        if n <= length:
            return tile_to_length(clip, length)
        start = int(rng.integers(n - length + 1))
        return clip[start : start + length]

    def _remember(self, k: int, clip: torch.Tensor) -> None:
        self._pool[k] = clip
        self._pooled += clip.shape[0]
        while self._pooled > self.pool_samples and len(self._pool) > 1:
            _, old = self._pool.popitem(last=False)
            self._pooled -= old.shape[0]
