"""The batch the trainer receives, and how items become one.

``noisy_audio`` is what the model hears; ``audio`` is the clean target for the quantizer;
``noise`` is the raw noise drawn for each utterance (length-matched, zero-padded).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from nestkit.contracts import BatchAugmentor as BatchAugmentor  # re-exported: the contract lives with the others


@dataclass
class AudioItem:
    """One decoded utterance (produced in the loader workers)."""

    index: int
    audio: torch.Tensor  # (T,) float32
    noise: torch.Tensor  # (T,) float32, zeros without a noise manifest
    has_noise: bool


@dataclass
class SkippedItem:
    """An utterance that could not be used, and why."""

    index: int
    reason: str
    path: str


@dataclass
class AudioBatch:
    """A padded batch. Shapes: ``audio``/``noise``/``noisy_audio`` (B, T) float32, lengths (B,) int64.

    ``noise_len`` is 0 for utterances without noise (no noise manifest). ``skipped`` counts
    the utterances dropped since the previous batch of the same loader, by reason (the
    loader also keeps the running totals in ``loader.skipped``). ``indices`` are manifest
    positions; ``seed`` drives the batch augmentor so a batch is the same however many workers
    produce it.
    """

    audio: torch.Tensor
    audio_len: torch.Tensor
    noise: torch.Tensor
    noise_len: torch.Tensor
    noisy_audio: torch.Tensor
    noisy_audio_len: torch.Tensor
    indices: torch.Tensor
    seed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: list[str] = field(default_factory=list)
    augmented: bool = False

    def __len__(self) -> int:
        return int(self.audio.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> AudioBatch:
        """The same batch with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    def pin_memory(self) -> AudioBatch:
        """Called by torch's DataLoader when ``pin_memory`` is on."""
        pinned = {f.name: getattr(self, f.name).pin_memory() for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **pinned)


def pad_stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """(B, max T) zero-padded."""
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)


def collate(items: list[AudioItem], seed: int = 0) -> AudioBatch:
    """Pad items into a batch; ``noisy_audio = audio + noise`` until an augmentor says otherwise
    (NeMo's behaviour without a batch augmentor)."""
    audio = pad_stack([it.audio for it in items])
    noise = pad_stack([it.noise for it in items])
    audio_len = torch.tensor([it.audio.shape[0] for it in items], dtype=torch.int64)
    noise_len = torch.tensor([it.noise.shape[0] if it.has_noise else 0 for it in items], dtype=torch.int64)
    return AudioBatch(
        audio=audio,
        audio_len=audio_len,
        noise=noise,
        noise_len=noise_len,
        noisy_audio=audio + noise,
        noisy_audio_len=audio_len.clone(),
        indices=torch.tensor([it.index for it in items], dtype=torch.int64),
        seed=seed,
    )


def augment_on_its_device(
    augmentor: BatchAugmentor | None, generators: dict[str, torch.Generator], batch: AudioBatch
) -> AudioBatch:
    """``augmentor`` applied where ``batch`` lives, drawing from a generator per device (kept in
    ``generators``) seeded with the batch's own seed: the same draws whichever rank or worker made
    the batch. A no-op without an augmentor, for an augmented batch and for an empty one."""
    if augmentor is None or batch.augmented or len(batch) == 0:
        return batch
    device = batch.audio.device
    g = generators.get(str(device))
    if g is None:
        g = generators[str(device)] = torch.Generator(device=device)
    g.manual_seed(batch.seed)
    return augmentor(batch, g)
