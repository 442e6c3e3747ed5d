"""SpecAugment on log-mel features (Park et al. 2019, arXiv:1904.08779), batched.

Same parameters and drawing rules as NeMo's ``SpectrogramAugmentation`` / ``SpecAugment``:
per utterance, ``freq_masks`` bands start uniformly in ``[0, D - freq_width]`` with a width
uniform in ``[0, freq_width]``; ``time_masks`` spans start uniformly in
``[0, max(1, L - W)]`` with a width uniform in ``[0, W]``, where ``W = time_width`` frames, or
``max(1, int(L * time_width))`` when ``time_width`` is a float fraction of the utterance's
length ``L``. NeMo loops over utterances on the host; here every draw is one tensor op over
the batch, and nothing is written past an utterance's valid frames (NeMo can cut into the
padding when ``L < W``).
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

import nestkit


class SpecAugmentConfig(nestkit.ComponentConfig):
    """NeMo's ``SpectrogramAugmentation`` keys (the SpecAugment part)."""

    freq_masks: int = Field(0, ge=0, description="frequency bands masked per utterance")
    freq_width: int = Field(10, ge=0, description="widest frequency band, in mel bins")
    time_masks: int = Field(0, ge=0, description="time spans masked per utterance")
    time_width: int | float = Field(
        10, ge=0, description="widest time span: frames (int) or a fraction of the utterance length (float in [0, 1])"
    )
    mask_value: float = Field(0.0, description="value written into masked bins")

    @model_validator(mode="after")
    def _check(self) -> SpecAugmentConfig:
        if isinstance(self.time_width, float) and self.time_width > 1.0:
            raise ValueError(f"time_width as a float is a fraction of the length and must be in [0, 1], got {self.time_width}")
        return self


def _randint(high: Tensor, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Integers uniform in ``[0, high]`` (inclusive; ``high`` broadcasts against ``shape``)."""
    u = torch.rand(shape, generator=generator, device=high.device, dtype=torch.float64)
    return torch.minimum(torch.floor(u * (high + 1).double()).long(), high)


def _spans(start: Tensor, width: Tensor, size: int) -> Tensor:
    """(B, N) starts and widths -> (B, size) bool: position covered by any of the N spans."""
    pos = torch.arange(size, device=start.device)
    inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])  # (B, N, size)
    return inside.any(dim=1)


class SpecAugment(nn.Module):
    """``aug(feats (B, D, T), feats_len (B,), generator=None) -> feats (B, D, T)``.

    Active in training mode only (an identity in eval mode, as SpecAugment is a training-time
    regulariser). The input is not modified in place.
    """

    def __init__(
        self, *, freq_masks: int, freq_width: int, time_masks: int, time_width: int | float, mask_value: float
    ) -> None:
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.mask_value = mask_value

    def draw(
        self, shape: torch.Size | tuple[int, int, int], feats_len: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Masked bins (B, D) and masked valid frames (B, T) for features of ``shape``: a bin is
        masked over the utterance's valid frames, a frame over all bins."""
        b, d, t = shape
        lengths = feats_len.to(torch.long)
        freq = torch.zeros(b, d, dtype=torch.bool, device=lengths.device)
        time = torch.zeros(b, t, dtype=torch.bool, device=lengths.device)
        if self.freq_masks > 0 and self.freq_width > 0:
            width = min(self.freq_width, d)
            top = torch.full((b, self.freq_masks), d - width, device=lengths.device)
            start = _randint(top, (b, self.freq_masks), generator)
            size = _randint(torch.full_like(top, width), (b, self.freq_masks), generator)
            freq = _spans(start, size, d)
        if self.time_masks > 0:
            if isinstance(self.time_width, float):
                max_w = torch.floor(lengths.double() * self.time_width).long().clamp(min=1)
            else:
                max_w = torch.full_like(lengths, self.time_width)
            max_w = max_w[:, None].expand(b, self.time_masks)
            top = (lengths[:, None] - max_w).clamp(min=1)
            start = _randint(top, (b, self.time_masks), generator)
            size = _randint(max_w, (b, self.time_masks), generator)
            time = _spans(start, size, t)
        valid = torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]  # (B, T)
        return freq, time & valid

    def masks(self, shape: torch.Size | tuple[int, int, int], feats_len: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The (B, D, T) bool mask (True = masked) that ``forward`` applies with the same generator state."""
        freq, time = self.draw(shape, feats_len, generator)
        valid = torch.arange(shape[2], device=feats_len.device)[None, :] < feats_len[:, None]
        return (freq[:, :, None] & valid[:, None, :]) | time[:, None, :]

    @torch.no_grad()
    def forward(self, feats: Tensor, feats_len: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training or (self.freq_masks == 0 and self.time_masks == 0):
            return feats
        freq, time = self.draw(feats.shape, feats_len, generator)
        valid = torch.arange(feats.shape[2], device=feats.device)[None, :] < feats_len[:, None]
        # two broadcast fills: no (B, D, T) mask is materialised
        out = feats.masked_fill(freq[:, :, None] & valid[:, None, :], self.mask_value)
        return out.masked_fill_(time[:, None, :], self.mask_value)


def build_spec_augment(cfg: SpecAugmentConfig) -> SpecAugment:
    return SpecAugment(**cfg.model_dump())
