"""Masked-token prediction loss with label smoothing (kind ``loss``).

Same keys and call contract as the built-in ``multi_mlm`` (NeMo's ``MultiMLMLoss``): the
(B, D, T) feature mask is regrouped ``combine_time_steps`` frames per token, a token counts as
masked above ``mask_threshold``, and the loss averages over masked tokens and codebooks. Each
token's NLL becomes ``(1 - eps) * NLL + eps * mean_c(-log p_c)`` (uniform smoothing, the same
definition as ``torch.nn.functional.cross_entropy(label_smoothing=eps)``); with eps = 0 it is
the built-in loss, bit for bit. A batch without masked tokens gives a finite zero.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

import nestkit


class LabelSmoothedMLMConfig(nestkit.MultiMLMConfig):
    """NeMo's ``MultiMLMLoss`` keys plus the smoothing weight."""

    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="probability mass spread uniformly over all classes")


class LabelSmoothedMLMLoss(nestkit.MaskedTokenLoss):
    """``loss(masks=(B, D, T), log_probs=(B, T', C[, H]), tokens=(B, T'[, H]), encoded_len=None)`` -> scalar."""

    def __init__(self, combine_time_steps: int, mask_threshold: float, num_decoders: int, label_smoothing: float) -> None:
        super().__init__(combine_time_steps, mask_threshold, num_decoders)
        self.label_smoothing = label_smoothing

    def forward(self, *, masks: Tensor, log_probs: Tensor, tokens: Tensor, encoded_len: Tensor | None = None) -> Tensor:
        token_mask, log_probs, tokens = self.aligned(masks, log_probs, tokens)
        weight = token_mask.to(log_probs.dtype)  # (B, T)
        nll = -log_probs.gather(2, tokens.long().unsqueeze(2)).squeeze(2)  # (B, T, H)
        if self.label_smoothing > 0.0:  # a config constant: no device sync
            nll = (1.0 - self.label_smoothing) * nll - self.label_smoothing * log_probs.mean(2)
        per_book = (nll * weight[:, :, None]).sum((0, 1)) / weight.sum().clamp_min(1.0)
        return per_book.mean()


def build_label_smoothed_mlm(cfg: LabelSmoothedMLMConfig) -> LabelSmoothedMLMLoss:
    return LabelSmoothedMLMLoss(cfg.combine_time_steps, cfg.mask_threshold, cfg.num_decoders, cfg.label_smoothing)
