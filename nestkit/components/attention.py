"""Relative-position multi-head self-attention (Transformer-XL style, as in NeMo's Conformer).

The content term goes through ``scaled_dot_product_attention``; the position term (query plus
``pos_bias_v`` against projected sinusoidal position embeddings, rel-shifted) enters it as an
additive float bias together with the key-padding mask. Q, K and V come from one fused linear
layer; ``nestkit.interop.nemo`` splits it into NeMo's ``linear_q/k/v`` and back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoid_table(max_len: int, d_model: int) -> Tensor:
    """(1, 2*max_len-1, d_model) embeddings of positions max_len-1 down to -(max_len-1), float32."""
    positions = torch.arange(max_len - 1, -max_len, -1, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    pe = torch.zeros(positions.shape[0], d_model)
    pe[:, 0::2] = torch.sin(positions * div_term)
    pe[:, 1::2] = torch.cos(positions * div_term)
    return pe.unsqueeze(0)


class RelPositionalEncoding(nn.Module):
    """Scales the input by ``xscale`` and returns it with the (2T-1) relative position embeddings.

    The table is a non-persistent buffer (not saved, as in NeMo) and grows on demand.
    """

    def __init__(self, d_model: int, max_len: int, xscale: float | None, dropout: float, dropout_emb: float) -> None:
        super().__init__()
        self.d_model = d_model
        self.xscale = xscale
        self.dropout = nn.Dropout(dropout)
        self.dropout_emb = nn.Dropout(dropout_emb) if dropout_emb > 0 else None
        self.register_buffer("pe", sinusoid_table(max_len, d_model), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, D) -> (scaled x (B, T, D), pos_emb (1, 2T-1, D))."""
        t = x.shape[1]
        if (self.pe.shape[1] + 1) // 2 < t:
            self.pe = sinusoid_table(t, self.d_model).to(self.pe.device)
        center = self.pe.shape[1] // 2  # index of relative position 0
        pos_emb = self.pe[:, center - t + 1 : center + t].to(x.dtype)
        if self.xscale:
            x = x * self.xscale
        if self.dropout_emb is not None:
            pos_emb = self.dropout_emb(pos_emb)
        return self.dropout(x), pos_emb


def rel_shift(x: Tensor) -> Tensor:
    """(B, H, T, 2T-1) scores against positions T-1..-(T-1) -> (B, H, T, T) scores by key index."""
    b, h, t, p = x.shape
    x = F.pad(x, (1, 0)).view(b, h, p + 1, t)
    return x[:, :, 1:].reshape(b, h, t, p)[:, :, :, :t]


class RelPositionMultiHeadAttention(nn.Module):
    """Self-attention over (B, T, D) with untied position biases ``pos_bias_u``/``pos_bias_v``."""

    def __init__(self, n_heads: int, d_model: int, dropout_att: float, use_bias: bool) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}")
        self.h, self.d_k = n_heads, d_model // n_heads
        self.dropout_att = dropout_att
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=use_bias)
        self.linear_out = nn.Linear(d_model, d_model, bias=use_bias)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.d_k))

    def forward(self, x: Tensor, pos_emb: Tensor, key_pad: Tensor) -> Tensor:
        """x (B, T, D), pos_emb (1, 2T-1, D), key_pad (B, T) True = padding -> (B, T, D).

        Rows of padded queries come out as zero before ``linear_out``, as in NeMo.
        """
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, self.d_k).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, d_k)
        p = self.linear_pos(pos_emb).view(1, -1, self.h, self.d_k).transpose(1, 2)  # (1, H, 2T-1, d_k)
        scale = 1.0 / math.sqrt(self.d_k)
        bias = rel_shift(torch.matmul(q + self.pos_bias_v[:, None, :], p.transpose(-2, -1))) * scale
        bias = bias.masked_fill(key_pad[:, None, None, :], float("-inf"))
        out = F.scaled_dot_product_attention(
            q + self.pos_bias_u[:, None, :], k, v, attn_mask=bias,
            dropout_p=self.dropout_att if self.training else 0.0, scale=scale,
        )
        out = out.transpose(1, 2).reshape(b, t, self.h * self.d_k)
        out = out.masked_fill(key_pad[:, :, None], 0.0)
        return self.linear_out(out)
