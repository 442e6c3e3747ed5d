"""Random block masking of (B, D, T) features, NeMo 3.0.0's ``RandomBlockMasking`` in tensor ops.

Both of NeMo's modes are drawn on the device (no per-utterance Python loop, no host sync), with
the same distribution of block starts as NeMo 3.0.0, for an utterance of L frames:

- ``allow_overlap: true``: every start t with ``t + block_size <= L`` opens a block independently
  with probability ``mask_prob``, so a block may end exactly at the last frame and an utterance
  of exactly ``block_size`` frames can be masked; blocks may overlap. Shorter utterances are
  never masked.
- ``allow_overlap: false``: n = ceil(L * mask_prob / block_size) blocks; when (n + 1) blocks do
  not fit, the block shrinks to b = L // (n + 1). The utterance is cut into L // b - 1 slots of
  b frames shifted by one offset drawn uniformly from [0, b), and min(n, slots) distinct slots
  are chosen uniformly. Starts are ``slot * b + offset``, so the last possible start is
  (L // b - 2) * b + b - 1 and a block never reaches the last frame.

Masked frames take the value of ``mask_embedding`` (learnable, or frozen with ``freeze``).
``max_mask_ratio`` is nestkit's own cap (NeMo 3.0.0 accepts a key of that name and ignores it).
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from nestkit.registry import Component, ComponentConfig


class RandomBlockMaskingConfig(ComponentConfig):
    """NeMo's ``RandomBlockMasking`` keys plus an optional cap on the masked share."""

    mask_prob: float = Field(0.5, ge=0, le=1, description="overlap: per-frame block start probability; otherwise: target masked share")
    block_size: int = Field(48, ge=1, description="frames per masked block")
    mask_value: float | None = Field(None, description="constant mask value (null: a random N(0, 0.1) embedding)")
    feat_in: int = Field(..., gt=0, description="feature size D of the masked input")
    freeze: bool = Field(False, description="keep the mask embedding fixed")
    allow_overlap: bool = Field(False, description="let masked blocks overlap (NEST uses true)")
    max_mask_ratio: float | None = Field(None, gt=0, le=1, description="at most this share of each utterance's frames is masked (null: no cap)")

    @model_validator(mode="after")
    def _check(self) -> RandomBlockMaskingConfig:
        if self.max_mask_ratio is not None and not self.allow_overlap:
            raise ValueError("max_mask_ratio is only supported with allow_overlap: true")
        return self


def _ranks(scores: Tensor) -> Tensor:
    """Rank of each entry along the last dim (0 = smallest)."""
    return scores.argsort(dim=-1).argsort(dim=-1)


class RandomBlockMasking(nn.Module):
    """(feats (B, D, T), lengths (B,)) -> (masked feats (B, D, T), masks (B, D, T), 1 = masked)."""

    def __init__(self, cfg: RandomBlockMaskingConfig) -> None:
        super().__init__()
        self.mask_prob = cfg.mask_prob
        self.block_size = cfg.block_size
        self.allow_overlap = cfg.allow_overlap
        self.max_mask_ratio = cfg.max_mask_ratio
        if cfg.mask_value is None:
            embedding = torch.empty(cfg.feat_in).normal_(mean=0.0, std=0.1)
        else:
            embedding = torch.full((cfg.feat_in,), float(cfg.mask_value))
        self.mask_embedding = nn.Parameter(embedding, requires_grad=not cfg.freeze)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        time_mask = self.draw(lengths, feats.shape[-1])  # (B, T) bool
        masks = time_mask[:, None, :].expand_as(feats)
        masked = torch.where(masks, self.mask_embedding.to(feats.dtype)[None, :, None], feats)
        return masked, masks.to(feats.dtype)

    def draw(self, lengths: Tensor, max_len: int) -> Tensor:
        """A (B, max_len) boolean block mask for utterances of ``lengths`` frames."""
        if self.allow_overlap:
            return self._with_overlap(lengths, max_len)
        return self._without_overlap(lengths, max_len)

    def _with_overlap(self, lengths: Tensor, max_len: int) -> Tensor:
        device = lengths.device
        t = torch.arange(max_len, device=device)[None, :]
        can_start = t + self.block_size <= lengths[:, None]
        starts = (torch.rand(lengths.shape[0], max_len, device=device) < self.mask_prob) & can_start
        if self.max_mask_ratio is not None:
            # Keep a random subset of at most floor(ratio * L / block) blocks.
            max_blocks = torch.div(lengths * self.max_mask_ratio, self.block_size, rounding_mode="floor")
            scores = torch.where(starts, torch.rand(starts.shape, device=device), 2.0)
            starts = starts & (_ranks(scores) < max_blocks[:, None])
        # A frame is masked when a block started within the last block_size frames.
        count = torch.cumsum(starts.int(), dim=1)
        before = torch.nn.functional.pad(count, (self.block_size, 0))[:, :max_len]
        return (count - before) > 0

    def _without_overlap(self, lengths: Tensor, max_len: int) -> Tensor:
        device = lengths.device
        batch = lengths.shape[0]
        lengths = lengths.long()
        n_blocks = torch.ceil(lengths * self.mask_prob / self.block_size).long()
        short = (n_blocks + 1) * self.block_size > lengths
        block = torch.where(short, torch.div(lengths, n_blocks + 1, rounding_mode="floor"), self.block_size).clamp_min(1)
        offset = (torch.rand(batch, device=device) * block).long()  # uniform in [0, block)
        n_slots = torch.div(lengths, block, rounding_mode="floor") - 1
        slot_ids = torch.arange(max_len, device=device)[None, :]
        valid = slot_ids < n_slots[:, None]
        scores = torch.where(valid, torch.rand(batch, max_len, device=device), 2.0)
        chosen = (_ranks(scores) < n_blocks[:, None]) & valid  # (B, slots)
        # Frame t lies in slot (t - offset) // block; frames before the offset lie in none.
        shifted = slot_ids - offset[:, None]
        slot_of_t = torch.div(shifted.clamp_min(0), block[:, None], rounding_mode="floor").clamp_max(max_len - 1)
        return (shifted >= 0) & chosen.gather(1, slot_of_t)


def components() -> list[Component]:
    return [
        Component(
            kind="masking", name="random_block", factory=RandomBlockMasking, config=RandomBlockMaskingConfig,
            summary="random block masking with a mask embedding (NeMo's RandomBlockMasking, vectorised)",
        )
    ]
