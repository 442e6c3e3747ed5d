"""BEST-RQ random-projection quantizer (Chiu et al. 2022, arXiv:2202.01855), as in NeMo NEST.

``combine_time_steps`` consecutive frames are stacked, projected by a frozen xavier-normal
matrix to ``num_books`` x ``code_dim``, unit-normalised, and matched to the nearest of
``num_classes`` unit codebook vectors (kept in float64 as in NeMo, used in float32). For unit vectors the nearest by L2 distance is the one
with the largest dot product, so both ``dist_fn`` values pick the token with one matrix product
and an argmax (NeMo's L2 path builds a (B, T, books, code_dim, classes) float64 tensor instead).
Always float32: autocast is disabled inside.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from nestkit.registry import Component, ComponentConfig


class RandomProjectionConfig(ComponentConfig):
    """NeMo's ``RandomProjectionVectorQuantizer`` keys."""

    feat_in: int = Field(..., gt=0, description="feature size D of the (B, D, T) input")
    code_dim: int = Field(16, gt=0, description="codebook vector size")
    num_classes: int = Field(8192, gt=1, description="codebook entries per book")
    num_books: int = Field(1, ge=1, description="number of codebooks")
    dist_fn: Literal["l2", "cosine"] = Field("l2", description="distance (both give the same tokens)")
    freeze: bool = Field(True, description="keep the projection and codebooks fixed (BEST-RQ)")
    squeeze_single: bool = Field(False, description="return (B, T) tokens when num_books is 1")
    combine_time_steps: int = Field(1, ge=1, description="frames stacked per token (the subsampling factor)")
    time_ahead: Literal[False] = Field(False, description="input layout is (B, D, T)")


class RandomProjectionQuantizer(nn.Module):
    """feats (B, D, T) -> tokens (B, T // combine_time_steps, num_books) int64 (or (B, T') squeezed)."""

    def __init__(self, cfg: RandomProjectionConfig) -> None:
        super().__init__()
        self.num_books, self.code_dim, self.num_classes = cfg.num_books, cfg.code_dim, cfg.num_classes
        self.combine_time_steps = cfg.combine_time_steps
        self.squeeze_single = cfg.squeeze_single
        self.dist_fn = cfg.dist_fn
        self.proj = nn.Linear(cfg.feat_in * cfg.combine_time_steps, cfg.num_books * cfg.code_dim, bias=False)
        nn.init.xavier_normal_(self.proj.weight)
        books = F.normalize(torch.randn(cfg.num_books, cfg.num_classes, cfg.code_dim, dtype=torch.float64), dim=-1)
        self.codebooks = nn.Parameter(books)  # float64 like NeMo's; used in float32
        if cfg.freeze:
            self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, feats: Tensor) -> Tensor:
        with torch.autocast(feats.device.type, enabled=False):
            b, d, t = feats.shape
            c = self.combine_time_steps
            t_out = t // c
            x = feats.float().transpose(1, 2)[:, : t_out * c].reshape(b, t_out, c * d)
            x = F.normalize(F.linear(x, self.proj.weight.float()).view(b, t_out, self.num_books, self.code_dim), dim=-1)
            books = self.codebooks.float()  # (N, C, code_dim), unit vectors
            # (N, B*T', code_dim) @ (N, code_dim, C): one batched matrix product over the books.
            scores = torch.bmm(x.permute(2, 0, 1, 3).reshape(self.num_books, b * t_out, self.code_dim), books.transpose(1, 2))
            tokens = scores.argmax(dim=-1).view(self.num_books, b, t_out).permute(1, 2, 0)
            if self.dist_fn == "l2":
                # An all-zero group (padding) is equally close to every unit vector; NeMo's float64
                # L2 then picks the codebook vector of smallest norm. Keep that token for parity.
                nearest_zero = self.codebooks.norm(dim=-1).argmin(dim=-1)  # (N,)
                tokens = torch.where((x == 0).all(-1), nearest_zero, tokens)
        if self.squeeze_single and self.num_books == 1:
            return tokens.squeeze(-1)
        return tokens


def components() -> list[Component]:
    return [
        Component(
            kind="quantizer", name="random_projection", factory=RandomProjectionQuantizer, config=RandomProjectionConfig,
            summary="BEST-RQ frozen random-projection quantizer (one matmul + argmax, float32)",
        )
    ]
