"""k-means targets (HuBERT-style, Hsu et al. 2021, arXiv:2106.07447) as a nestkit quantizer.

Same call contract as the built-in ``random_projection`` quantizer: ``combine_time_steps``
consecutive frames of (B, D, T) features are stacked into one D*combine vector, and each
vector's token is its nearest centroid, found with one matrix product and an argmax. The
centroids come from a file (fit them with ``python -m nestkit_bestrq_extras.fit_kmeans``),
are frozen, and live in the state dict so checkpoints are self-contained. Always float32.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

import nestkit


class KMeansQuantizerConfig(nestkit.ComponentConfig):
    """Nearest-centroid targets. Shares ``random_projection``'s keys, so switching a quantizer
    section to k-means only needs ``name: kmeans`` and ``centroids_path``."""

    feat_in: int = Field(..., gt=0, description="feature size D of the (B, D, T) input")
    num_classes: int = Field(8192, gt=1, description="centroids per codebook (the token vocabulary)")
    centroids_path: str = Field(
        ..., description=".pt or .npy file of centroids, (num_classes, feat_in * combine_time_steps) "
        "or (num_books, num_classes, feat_in * combine_time_steps); relative to the working directory"
    )
    num_books: int = Field(1, ge=1, description="codebooks (a 3-D centroid file holds one set per book)")
    combine_time_steps: int = Field(1, ge=1, description="frames stacked per token (the subsampling factor)")
    dist_fn: Literal["l2", "cosine"] = Field("l2", description="nearest centroid by Euclidean distance or by cosine")
    squeeze_single: bool = Field(False, description="return (B, T) tokens when num_books is 1")
    freeze: Literal[True] = Field(True, description="centroids are fixed targets (only true)")
    time_ahead: Literal[False] = Field(False, description="input layout is (B, D, T)")

    @model_validator(mode="after")
    def _centroids(self) -> KMeansQuantizerConfig:
        load_centroids(self.centroids_path, self.num_books, self.num_classes, self.feat_in * self.combine_time_steps)
        return self


def load_centroids(path: str | os.PathLike[str], num_books: int, num_classes: int, dim: int) -> Tensor:
    """The (num_books, num_classes, dim) float32 centroids in ``path``; ValueError (one line naming the file) otherwise."""
    file = Path(path)
    try:
        stat = file.stat()
    except OSError:
        raise ValueError(f"centroids file '{file}' does not exist") from None
    data = _read(str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    found = tuple(data.shape)
    if data.dim() == 2 and num_books == 1:
        data = data.unsqueeze(0)
    expected = (num_books, num_classes, dim)
    if tuple(data.shape) != expected:
        want = f"({num_classes}, {dim})" if num_books == 1 else str(expected)
        raise ValueError(
            f"centroids file '{file}' holds shape {found}, expected {want} "
            f"(num_classes, feat_in * combine_time_steps)"
        )
    return data.clone()


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int, size: int) -> Tensor:
    """Read once per file version (the recipe check and the build both ask)."""
    try:
        if path.endswith(".npy"):
            raw = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.endswith(".pt"):
            raw = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ValueError(f"centroids file '{path}' must end in .pt or .npy")
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"centroids file '{path}' cannot be read: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(raw, Tensor) or not (raw.is_floating_point() and raw.dim() in (2, 3)):
        what = f"a {raw.dim()}-D {raw.dtype} tensor" if isinstance(raw, Tensor) else type(raw).__name__
        raise ValueError(f"centroids file '{path}' holds {what}, expected a 2-D or 3-D float tensor")
    if not bool(torch.isfinite(raw).all()):
        raise ValueError(f"centroids file '{path}' holds non-finite values")
    return raw.float()


def stack_frames(feats: Tensor, combine_time_steps: int) -> Tensor:
    """(B, D, T) -> (B, T // c, c * D): c consecutive frames concatenated (the quantizer's layout)."""
    b, d, t = feats.shape
    c = combine_time_steps
    return feats.transpose(1, 2)[:, : t // c * c].reshape(b, t // c, c * d)


class KMeansQuantizer(nn.Module):
    """feats (B, D, T) -> tokens (B, T // combine_time_steps, num_books) int64 (or (B, T') squeezed)."""

    def __init__(self, centroids: Tensor, *, combine_time_steps: int, dist_fn: str, squeeze_single: bool) -> None:
        super().__init__()
        self.num_books, self.num_classes, self.dim = centroids.shape
        self.combine_time_steps = combine_time_steps
        self.dist_fn = dist_fn
        self.squeeze_single = squeeze_single
        self.register_buffer("centroids", centroids.float().contiguous())

    @torch.no_grad()
    def forward(self, feats: Tensor) -> Tensor:
        with torch.autocast(feats.device.type, enabled=False):
            x = stack_frames(feats.float(), self.combine_time_steps)  # (B, T', dim)
            b, t_out, _ = x.shape
            c = self.centroids
            if self.dist_fn == "cosine":
                x, c = F.normalize(x, dim=-1), F.normalize(c, dim=-1)
            # (N, B*T', dim) @ (N, dim, C): one batched matrix product over the books.
            scores = torch.matmul(x.reshape(1, b * t_out, self.dim), c.transpose(1, 2))
            if self.dist_fn == "l2":
                # argmin |x - c|^2 = argmax (x.c - |c|^2 / 2): |x|^2 is the same for every c
                scores = scores - 0.5 * (c * c).sum(-1)[:, None, :]
            tokens = scores.argmax(dim=-1).view(self.num_books, b, t_out).permute(1, 2, 0)
        if self.squeeze_single and self.num_books == 1:
            return tokens.squeeze(-1)
        return tokens


def build_kmeans(cfg: KMeansQuantizerConfig) -> KMeansQuantizer:
    centroids = load_centroids(cfg.centroids_path, cfg.num_books, cfg.num_classes, cfg.feat_in * cfg.combine_time_steps)
    return KMeansQuantizer(centroids, combine_time_steps=cfg.combine_time_steps, dist_fn=cfg.dist_fn, squeeze_single=cfg.squeeze_single)
