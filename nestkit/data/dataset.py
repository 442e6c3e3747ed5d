"""Batch production shared by the manifest and the tarred datasets (runs in loader workers).

A batch is made from a batch *spec* (the items with their path, offset and duration, the epoch,
a seed), so its contents depend on the spec only — not on which worker builds it or how many
workers there are — and workers never need the manifest: under any start method they hold no
copy of it. Items that cannot be used are dropped from the batch and counted by reason with
their path; nothing is ever written to the input data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nestkit.data.audio import AudioReadError, Source, pad_to_length, read_audio
from nestkit.data.batch import AudioBatch, AudioItem, BatchAugmentor, SkippedItem, collate
from nestkit.data.manifest import Manifest
from nestkit.data.noise import NoiseSource


@dataclass(frozen=True)
class ItemRef:
    """One utterance to decode: its manifest index and where its audio is."""

    index: int
    path: str
    offset: float
    duration: float

    @staticmethod
    def of(manifest: Manifest, index: int) -> ItemRef:
        return ItemRef(index, manifest.paths[index], float(manifest.offsets[index]), float(manifest.durations[index]))


@dataclass(frozen=True)
class BatchSpec:
    """What one batch is made of."""

    items: tuple[ItemRef, ...]
    epoch: int
    position: int
    seed: int

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(item.index for item in self.items)


def batch_seed(*parts: int) -> int:
    """A 63-bit seed mixing the parts (seed, epoch, rank, position...)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class ItemReader:
    """Decodes one utterance plus its noise; what the datasets share."""

    def __init__(
        self,
        noise: NoiseSource,
        *,
        sample_rate: int,
        seed: int,
        min_audio_len_secs: float = 0.0,
        pad_audio_mode: str = "repeat",
        channel_selector: int | None = None,
        augmentor: BatchAugmentor | None = None,
    ) -> None:
        self.noise = noise
        self.sample_rate, self.seed = sample_rate, seed
        self.min_len = int(round(min_audio_len_secs * sample_rate))
        self.pad_audio_mode, self.channel_selector = pad_audio_mode, channel_selector
        self.augmentor = augmentor  # runs here, in the loader; None when there is none or it runs on the device

    def item(self, ref: ItemRef, epoch: int, source: Source | None = None) -> AudioItem | SkippedItem:
        """Decode ``ref`` (from ``source`` bytes/stream when given, else from its path)."""
        index = ref.index
        try:
            audio = read_audio(
                ref.path if source is None else source,
                sample_rate=self.sample_rate,
                offset=ref.offset,
                duration=ref.duration,
                channel_selector=self.channel_selector,
            )
        except AudioReadError as err:  # a segment of a file is an item of its own: named with its offset
            return SkippedItem(index, err.reason, f"{ref.path} (offset {ref.offset:g} s)" if ref.offset else ref.path)
        return self.utterance(index, audio, epoch)

    def utterance(self, index: int, audio: torch.Tensor, epoch: int) -> AudioItem:
        """A decoded (T,) utterance padded to the minimum length, with its noise drawn."""
        if self.min_len:
            audio = pad_to_length(audio, self.min_len, self.pad_audio_mode)
        rng = np.random.default_rng([self.seed, epoch, index])
        noise = self.noise.segment(audio.shape[0], rng)
        return AudioItem(index, audio, noise, self.noise.enabled)

    def batch(self, results: Sequence[AudioItem | SkippedItem], seed: int, noise_failures: dict[str, int]) -> AudioBatch:
        """Collate the good items, count the rest, augment when it runs in the loader."""
        good = [r for r in results if isinstance(r, AudioItem)]
        bad = [r for r in results if isinstance(r, SkippedItem)]
        batch = collate(good, seed=seed) if good else empty_batch(seed)
        skipped = dict(noise_failures)
        for b in bad:
            skipped[b.reason] = skipped.get(b.reason, 0) + 1
        batch.skipped = skipped
        batch.skipped_examples = [f"{b.reason}: {b.path}" for b in bad]
        if good and self.augmentor is not None:
            batch = self.augmentor(batch, torch.Generator().manual_seed(seed))
        return batch

    def noise_failures_since(self, before: dict[str, int]) -> dict[str, int]:
        now = self.noise.failures
        return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}


def empty_batch(seed: int) -> AudioBatch:
    """A batch with no utterance (every item of it was unusable); the loader skips it."""
    z = torch.zeros(0, 0)
    n = torch.zeros(0, dtype=torch.int64)
    return AudioBatch(z, n, z, n, z, n, n, seed=seed)


class ManifestBatchDataset(torch.utils.data.Dataset[AudioBatch]):
    """Map-style: ``dataset[spec]`` decodes and collates the batch ``spec`` describes."""

    def __init__(self, reader: ItemReader) -> None:
        self.reader = reader

    def __getitem__(self, spec: BatchSpec) -> AudioBatch:  # type: ignore[override]
        before = dict(self.reader.noise.failures)
        results = [self.reader.item(ref, spec.epoch) for ref in spec.items]
        return self.reader.batch(results, spec.seed, self.reader.noise_failures_since(before))
