"""Multi-softmax decoder: a per-frame linear map to ``num_classes`` x ``num_decoders`` log-probs.

NeMo's ``MultiSoftmaxDecoder`` (a kernel-1 Conv1d); here a Linear on (B, T, D), whose weight
is the Conv1d weight without its kernel axis (``nestkit.interop.nemo`` converts).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from nestkit.registry import Component, ComponentConfig


class MultiSoftmaxConfig(ComponentConfig):
    """NeMo's ``MultiSoftmaxDecoder`` keys."""

    feat_in: int = Field(..., gt=0, description="encoder output size")
    num_classes: int = Field(..., gt=1, description="classes per codebook")
    num_decoders: int = Field(1, ge=1, description="one softmax per codebook")
    init_mode: Literal["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"] = Field(
        "xavier_uniform", description="weight initialisation"
    )
    use_bias: bool = Field(False, description="add a bias")
    squeeze_single: bool = Field(False, description="return (B, T, C) when num_decoders is 1")


_INIT = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": nn.init.kaiming_uniform_,
    "kaiming_normal": nn.init.kaiming_normal_,
}


class MultiSoftmaxDecoder(nn.Module):
    """encoded (B, D, T) -> log-probs (B, T, num_classes, num_decoders) (or (B, T, C) squeezed)."""

    def __init__(self, cfg: MultiSoftmaxConfig) -> None:
        super().__init__()
        self.num_classes, self.num_decoders = cfg.num_classes, cfg.num_decoders
        self.squeeze_single = cfg.squeeze_single
        self.proj = nn.Linear(cfg.feat_in, cfg.num_classes * cfg.num_decoders, bias=cfg.use_bias)
        _INIT[cfg.init_mode](self.proj.weight)
        if self.proj.bias is not None:
            nn.init.zeros_(self.proj.bias)

    def forward(self, encoded: Tensor) -> Tensor:
        logits = self.proj(encoded.transpose(1, 2))
        logits = logits.view(logits.shape[0], logits.shape[1], self.num_classes, self.num_decoders)
        if self.squeeze_single and self.num_decoders == 1:
            logits = logits.squeeze(-1)
        return torch.log_softmax(logits, dim=2)


def components() -> list[Component]:
    return [
        Component(
            kind="decoder", name="multi_softmax", factory=MultiSoftmaxDecoder, config=MultiSoftmaxConfig,
            summary="per-frame linear + log-softmax, one softmax per codebook (NeMo's MultiSoftmaxDecoder)",
        )
    ]
