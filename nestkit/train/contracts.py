"""What the trainer needs from a model and from a data loader, as typed protocols.

A model registered by a plugin trains under nestkit when its forward pass
``model(audio, audio_len, noisy_audio=..., noisy_audio_len=..., apply_mask=True)`` returns a
:class:`TrainingOutput`. When the output is also a :class:`MaskedTokenOutput` (NEST's is), the
trainer computes target statistics from it (target perplexity, unigram baseline, context gain:
see :mod:`nestkit.health`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from nestkit.data.skips import SkipReport


@runtime_checkable
class TrainingOutput(Protocol):
    """The minimum a training forward pass returns. Every value is a 0-dim device tensor."""

    loss: Tensor  # what backward() runs on
    masked_accuracy: Tensor  # top-1 accuracy over the positions the loss scores
    masked_fraction: Tensor  # share of valid input frames that were masked


@runtime_checkable
class MaskedTokenOutput(Protocol):
    """Targets and predictions of a masked-token model, for target statistics.

    Shapes: ``tokens`` (B, T'[, H]) integer targets, ``log_probs`` (B, T', C[, H]),
    ``token_mask`` (B, T') bool (positions the loss scores), ``token_valid`` (B, T') bool (not
    padding); H is the number of codebooks.
    """

    tokens: Tensor
    log_probs: Tensor
    token_mask: Tensor
    token_valid: Tensor


class TrainBatch(Protocol):
    """A padded batch: clean and noisy audio (B, T) and lengths (B,), plus manifest indices."""

    audio: Tensor
    audio_len: Tensor
    noisy_audio: Tensor
    noisy_audio_len: Tensor
    indices: Tensor

    def to(self, device: Any, non_blocking: bool = False) -> TrainBatch: ...


class TrainLoader(Protocol):
    """An iterable of batches with epochs, a resumable position and a report of what it skipped."""

    skipped: dict[str, int]  # unusable items so far, by reason
    augment_on_device: bool  # batches still need :meth:`device_augmentor` once on the device

    def __iter__(self) -> Iterator[Any]: ...

    def set_epoch(self, epoch: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def num_batches(self) -> int | None:
        """Batches in one epoch, or None when it cannot be known in advance (a stream)."""
        ...

    def device_augmentor(self, batch: Any) -> Any: ...

    def describe(self) -> str:
        """One line for the start summary (hours, batching)."""
        ...

    def skipped_report(self) -> SkipReport:
        """The items skipped so far, by reason, with paths (:mod:`nestkit.data.skips`)."""
        ...
