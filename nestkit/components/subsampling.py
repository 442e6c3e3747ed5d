"""FastConformer's depthwise-striding (``dw_striding``) convolutional subsampling.

Layout and parameter names follow NeMo's ``ConvSubsampling`` so state dicts map one to one:
``conv.0`` is a 3x3 stride-2 conv from one channel, then per further halving a depthwise 3x3
stride-2 conv and a pointwise 1x1 conv (``conv.2``/``conv.3``, ``conv.5``/``conv.6``, ...), each
stage followed by ReLU; ``out`` projects channels x remaining frequency bins to ``d_model``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

KERNEL, STRIDE, PADDING = 3, 2, 1


def subsampled_length(lengths: Tensor | int, factor: int) -> Tensor | int:
    """Length after ``log2(factor)`` stride-2 convs (kernel 3, padding 1): NeMo's ``calc_length``."""
    for _ in range(int(math.log2(factor))):
        if isinstance(lengths, int):
            lengths = (lengths + 2 * PADDING - KERNEL) // STRIDE + 1
        else:
            lengths = torch.div(lengths + 2 * PADDING - KERNEL, STRIDE, rounding_mode="floor") + 1
    return lengths


class DwStridingSubsampling(nn.Module):
    """(B, T, feat_in) + lengths -> (B, T / factor, d_model) + lengths."""

    def __init__(self, feat_in: int, d_model: int, factor: int, channels: int) -> None:
        super().__init__()
        if factor < 2 or factor & (factor - 1):
            raise ValueError(f"dw_striding needs a power-of-two subsampling_factor, got {factor}")
        self.factor = factor
        # `out` is registered first so the state dict lists keys in NeMo's order.
        self.out = nn.Linear(channels * int(subsampled_length(feat_in, factor)), d_model)
        layers: list[nn.Module] = [nn.Conv2d(1, channels, KERNEL, STRIDE, PADDING), nn.ReLU()]
        for _ in range(int(math.log2(factor)) - 1):
            layers += [
                nn.Conv2d(channels, channels, KERNEL, STRIDE, PADDING, groups=channels),
                nn.Conv2d(channels, channels, 1),
                nn.ReLU(),
            ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, F), lengths (B,) -> (B, T', d_model), lengths (B,) int64.

        As in NeMo's masked conv stack, time steps past each (running) length are zeroed
        before the first conv and after every conv, so padding never reaches valid frames.
        """
        x = _mask_time(x.unsqueeze(1), lengths)  # (B, 1, T, F)
        for layer in self.conv:
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                if layer.stride[0] != 1:
                    lengths = subsampled_length(lengths, 2)
                x = _mask_time(x, lengths)
        b, c, t, f = x.shape  # (B, C, T', F')
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        return x, lengths.long()


def _mask_time(x: Tensor, lengths: Tensor) -> Tensor:
    """Zero (B, C, T, F) at time steps >= lengths."""
    pad = torch.arange(x.shape[2], device=x.device)[None, :] >= lengths[:, None]
    return x.masked_fill(pad[:, None, :, None], 0.0)
