"""Masked-token prediction losses (NeMo's ``MLMLoss`` and ``MultiMLMLoss``).

The (B, D, T) feature mask is regrouped ``combine_time_steps`` frames per token; a token counts
as masked when more than ``mask_threshold`` of its mask values are 1. The loss is the mean
negative log-likelihood of the target token over masked tokens (averaged over codebooks).

Unlike NeMo, a batch without any masked token gives a finite zero loss (NeMo's NLL over an
empty selection is NaN), and no boolean indexing is used, so nothing waits on the device.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from nestkit.registry import Component, ComponentConfig


class MLMConfig(ComponentConfig):
    """NeMo's ``MLMLoss`` keys."""

    combine_time_steps: int = Field(1, ge=1, description="mask frames per token (the subsampling factor for pre_conv masking)")
    mask_threshold: float = Field(0.8, ge=0, lt=1, description="a token is masked when more than this share of its mask is 1")


class MultiMLMConfig(MLMConfig):
    """NeMo's ``MultiMLMLoss`` keys."""

    num_decoders: int = Field(1, ge=1, description="codebooks (one softmax each)")
    squeeze_single: bool = Field(False, description="log-probs are (B, T, C) and tokens (B, T) when num_decoders is 1")


class MaskedTokenLoss(nn.Module):
    """``loss(masks=(B, D, T), log_probs=(B, T', C[, H]), tokens=(B, T'[, H]), encoded_len=None)`` -> scalar.

    Public as ``nestkit.MaskedTokenLoss`` (configs: ``nestkit.MLMConfig``, ``nestkit.MultiMLMConfig``):
    a plugin's masked-token loss subclasses it, overrides ``forward`` and keeps ``aligned``, the
    part of :class:`nestkit.contracts.Loss` that says which tokens are scored."""

    def __init__(self, combine_time_steps: int, mask_threshold: float, num_decoders: int = 1) -> None:
        super().__init__()
        self.combine_time_steps = combine_time_steps
        self.mask_threshold = mask_threshold
        self.num_decoders = num_decoders

    def token_mask(self, masks: Tensor) -> Tensor:
        """(B, D, T) feature mask -> (B, T // combine_time_steps) bool: which tokens are masked."""
        b, d, t = masks.shape
        c = self.combine_time_steps
        grouped = masks[:, :, : t // c * c].transpose(1, 2).reshape(b, t // c, c * d)
        return grouped.float().mean(-1) > self.mask_threshold

    @staticmethod
    def _books(log_probs: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        if log_probs.dim() == 3:
            log_probs = log_probs.unsqueeze(-1)
        if tokens.dim() == 2:
            tokens = tokens.unsqueeze(-1)
        return log_probs, tokens

    def aligned(self, masks: Tensor, log_probs: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Token mask (B, T), log-probs (B, T, C, H) and tokens (B, T, H) cut to one length."""
        log_probs, tokens = self._books(log_probs, tokens)
        token_mask = self.token_mask(masks)
        t = min(token_mask.shape[1], log_probs.shape[1], tokens.shape[1])
        return token_mask[:, :t], log_probs[:, :t], tokens[:, :t]

    def forward(self, *, masks: Tensor, log_probs: Tensor, tokens: Tensor, encoded_len: Tensor | None = None) -> Tensor:
        token_mask, log_probs, tokens = self.aligned(masks, log_probs, tokens)
        weight = token_mask.to(log_probs.dtype)  # (B, T)
        nll = -log_probs.gather(2, tokens.long().unsqueeze(2)).squeeze(2)  # (B, T, H)
        per_book = (nll * weight[:, :, None]).sum((0, 1)) / weight.sum().clamp_min(1.0)
        return per_book.mean()


@torch.no_grad()
def masked_accuracy(token_mask: Tensor, log_probs: Tensor, tokens: Tensor) -> Tensor:
    """Top-1 accuracy over the scored tokens of a loss's ``aligned`` output (0 when none is
    scored), a 0-dim tensor: token_mask (B, T), log_probs (B, T, C, H), tokens (B, T, H)."""
    hits = (log_probs.argmax(2) == tokens).float().mean(-1)  # (B, T)
    weight = token_mask.float()
    return (hits * weight).sum() / weight.sum().clamp_min(1.0)


def _mlm(cfg: MLMConfig) -> MaskedTokenLoss:
    return MaskedTokenLoss(cfg.combine_time_steps, cfg.mask_threshold)


def _multi_mlm(cfg: MultiMLMConfig) -> MaskedTokenLoss:
    return MaskedTokenLoss(cfg.combine_time_steps, cfg.mask_threshold, cfg.num_decoders)


def components() -> list[Component]:
    return [
        Component(kind="loss", name="mlm", factory=_mlm, config=MLMConfig,
                  summary="masked-token NLL over masked tokens (NeMo's MLMLoss; zero, not NaN, when nothing is masked)"),
        Component(kind="loss", name="multi_mlm", factory=_multi_mlm, config=MultiMLMConfig,
                  summary="masked-token NLL averaged over codebooks (NeMo's MultiMLMLoss)"),
    ]
