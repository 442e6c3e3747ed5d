"""The FastConformer encoder (NeMo's ``ConformerEncoder`` with ``dw_striding`` subsampling).

Every option of the NEST recipes and their size table: subsampling factor and channels,
relative-position attention with untied biases, xscaling, macaron feed-forwards (x0.5),
the convolution module (pointwise-GLU, depthwise, batch/layer norm, SiLU, pointwise), all
dropouts, stochastic depth, ``use_bias`` and ``feat_out``. Attention always sees the full
context. Parameter names match NeMo's except the fused ``self_attn.qkv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from nestkit.components.attention import RelPositionalEncoding, RelPositionMultiHeadAttention
from nestkit.components.subsampling import DwStridingSubsampling
from nestkit.registry import Component, ComponentConfig


class FastConformerConfig(ComponentConfig):
    """NeMo's ``ConformerEncoder`` keys; options NEST never uses accept only their NEST value."""

    feat_in: int = Field(..., gt=0, description="input feature size (the preprocessor's `features`)")
    feat_out: int = Field(-1, description="output projection size (-1: none, output is d_model)")
    n_layers: int = Field(..., gt=0, description="number of Conformer blocks")
    d_model: int = Field(..., gt=0, description="model width")
    use_bias: bool = Field(True, description="biases in the feed-forward, attention and convolution layers")
    subsampling: Literal["dw_striding"] = Field("dw_striding", description="subsampling type")
    subsampling_factor: Literal[2, 4, 8, 16] = Field(8, description="time reduction of the subsampling")
    subsampling_conv_channels: int = Field(-1, description="subsampling conv channels (-1: d_model)")
    causal_downsampling: Literal[False] = Field(False, description="only non-causal subsampling is supported")
    ff_expansion_factor: int = Field(4, gt=0, description="feed-forward hidden size / d_model")
    self_attention_model: Literal["rel_pos"] = Field("rel_pos", description="attention type")
    n_heads: int = Field(4, gt=0, description="attention heads (must divide d_model)")
    att_context_size: list[int] = Field([-1, -1], description="attention context; only [-1, -1] (full) is supported")
    att_context_style: Literal["regular"] = Field("regular", description="attention context style")
    xscaling: bool = Field(True, description="scale the subsampled input by sqrt(d_model)")
    untie_biases: Literal[True] = Field(True, description="per-layer pos_bias_u/v (the only supported mode)")
    pos_emb_max_len: int = Field(5000, gt=0, description="initial size of the relative position table")
    conv_kernel_size: int = Field(31, gt=0, description="depthwise convolution kernel (odd)")
    conv_norm_type: Literal["batch_norm", "layer_norm"] = Field("batch_norm", description="norm in the convolution module")
    conv_context_size: None = Field(None, description="only the symmetric default is supported")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in the Conformer blocks")
    dropout_pre_encoder: float = Field(0.1, ge=0, lt=1, description="dropout after subsampling")
    dropout_emb: float = Field(0.1, ge=0, lt=1, description="dropout on the position embeddings")
    dropout_att: float = Field(0.0, ge=0, lt=1, description="dropout on attention probabilities")
    stochastic_depth_drop_prob: float = Field(0.0, ge=0, lt=1, description="stochastic depth drop probability")
    stochastic_depth_mode: Literal["linear", "uniform"] = Field("linear", description="how drop probability grows with depth")
    stochastic_depth_start_layer: int = Field(1, ge=1, description="first layer (1-based) that may be dropped")

    @model_validator(mode="after")
    def _check(self) -> FastConformerConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        if self.conv_kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size must be odd, got {self.conv_kernel_size}")
        if list(self.att_context_size) != [-1, -1]:
            raise ValueError(f"only full attention context [-1, -1] is supported, got {self.att_context_size}")
        if self.stochastic_depth_start_layer > self.n_layers:
            raise ValueError(
                f"stochastic_depth_start_layer ({self.stochastic_depth_start_layer}) exceeds n_layers ({self.n_layers})"
            )
        return self


def layer_drop_probs(n_layers: int, drop_prob: float, mode: str, start_layer: int) -> list[float]:
    """Per-layer stochastic-depth probabilities (NeMo's schedule: 0 before ``start_layer``)."""
    probs = [0.0] * start_layer
    rest = n_layers - start_layer
    if rest > 0:
        if mode == "linear":
            probs += [i / rest * drop_prob for i in range(1, rest + 1)]
        else:
            probs += [drop_prob] * rest
    return probs[:n_layers]


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float, use_bias: bool) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff, bias=use_bias)
        self.activation = nn.SiLU()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model, bias=use_bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, norm, SiLU, pointwise conv over (B, T, D)."""

    def __init__(self, d_model: int, kernel_size: int, norm_type: str, use_bias: bool) -> None:
        super().__init__()
        self.norm_type = norm_type
        self.pointwise_conv1 = nn.Conv1d(d_model, 2 * d_model, 1, bias=use_bias)
        self.depthwise_conv = nn.Conv1d(
            d_model, d_model, kernel_size, padding=(kernel_size - 1) // 2, groups=d_model, bias=use_bias
        )
        if norm_type == "batch_norm":
            self.batch_norm = nn.BatchNorm1d(d_model)
        else:
            self.batch_norm = nn.LayerNorm(d_model)
        self.activation = nn.SiLU()
        self.pointwise_conv2 = nn.Conv1d(d_model, d_model, 1, bias=use_bias)

    def forward(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        """x (B, T, D), pad_mask (B, T) True = padding -> (B, T, D)."""
        x = nn.functional.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)
        x = x.masked_fill(pad_mask[:, None, :], 0.0)  # padding never reaches valid frames
        x = self.depthwise_conv(x)
        if self.norm_type == "batch_norm":
            x = self.batch_norm(x)
        else:
            x = self.batch_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.pointwise_conv2(self.activation(x)).transpose(1, 2)


class ConformerLayer(nn.Module):
    """Macaron FF/2, self-attention, convolution, FF/2, final LayerNorm; pre-norm residuals."""

    def __init__(self, cfg: FastConformerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm_feed_forward1 = nn.LayerNorm(d)
        self.feed_forward1 = FeedForward(d, d * cfg.ff_expansion_factor, cfg.dropout, cfg.use_bias)
        self.norm_conv = nn.LayerNorm(d)
        self.conv = ConvModule(d, cfg.conv_kernel_size, cfg.conv_norm_type, cfg.use_bias)
        self.norm_self_att = nn.LayerNorm(d)
        self.self_attn = RelPositionMultiHeadAttention(cfg.n_heads, d, cfg.dropout_att, cfg.use_bias)
        self.norm_feed_forward2 = nn.LayerNorm(d)
        self.feed_forward2 = FeedForward(d, d * cfg.ff_expansion_factor, cfg.dropout, cfg.use_bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.norm_out = nn.LayerNorm(d)

    def forward(self, x: Tensor, pos_emb: Tensor, pad_mask: Tensor) -> Tensor:
        x = x + 0.5 * self.dropout(self.feed_forward1(self.norm_feed_forward1(x)))
        x = x + self.dropout(self.self_attn(self.norm_self_att(x), pos_emb, pad_mask))
        x = x + self.dropout(self.conv(self.norm_conv(x), pad_mask))
        x = x + 0.5 * self.dropout(self.feed_forward2(self.norm_feed_forward2(x)))
        return self.norm_out(x)


class FastConformerEncoder(nn.Module):
    """Features (B, feat_in, T) + lengths -> encoded (B, d_model, T / factor) + lengths.

    Every optional encoder capability of :mod:`nestkit.contracts`: ``subsample`` and ``encode``
    (the two halves of ``forward``, for post-conv masking), ``blocks`` (compiled or checkpointed
    in place) and ``forward_layers`` (chosen block outputs, for extraction).
    """

    d_model: int
    subsampling_factor: int

    def __init__(self, cfg: FastConformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_model = cfg.d_model
        self.subsampling_factor = int(cfg.subsampling_factor)
        self.output_size = cfg.feat_out if cfg.feat_out > 0 else cfg.d_model
        channels = cfg.subsampling_conv_channels if cfg.subsampling_conv_channels > 0 else cfg.d_model
        self.pre_encode = DwStridingSubsampling(cfg.feat_in, cfg.d_model, self.subsampling_factor, channels)
        self.pos_enc = RelPositionalEncoding(
            cfg.d_model, cfg.pos_emb_max_len, math.sqrt(cfg.d_model) if cfg.xscaling else None,
            cfg.dropout_pre_encoder, cfg.dropout_emb,
        )
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.n_layers))
        self.drop_probs = layer_drop_probs(
            cfg.n_layers, cfg.stochastic_depth_drop_prob, cfg.stochastic_depth_mode, cfg.stochastic_depth_start_layer
        )
        self.out_proj = nn.Linear(cfg.d_model, cfg.feat_out) if cfg.feat_out > 0 else None

    def subsample(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """feats (B, feat_in, T) -> subsampled (B, T', d_model), lengths (B,)."""
        return self.pre_encode(feats.transpose(1, 2), lengths)

    def blocks(self) -> Sequence[nn.Module]:
        """The Conformer blocks, in order."""
        return list(self.layers)

    def encode(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Subsampled (B, T', d_model) -> encoded (B, out, T'), lengths."""
        encoded, lengths, _ = self._run_blocks(x, lengths)
        return encoded, lengths

    def _run_blocks(
        self, x: Tensor, lengths: Tensor, return_layers: Sequence[int] | None = None
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Subsampled (B, T', d_model) -> (encoded (B, out, T'), lengths, chosen layer outputs (B, d_model, T'))."""
        x, pos_emb = self.pos_enc(x)
        pad_mask = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
        wanted = {i % len(self.layers) for i in return_layers} if return_layers is not None else set()
        outputs: dict[int, Tensor] = {}
        for i, (layer, p) in enumerate(zip(self.layers, self.drop_probs)):
            if self.training and p > 0.0:
                # One CPU random draw per layer (no device sync): skip the block or rescale it.
                if float(torch.rand(())) >= p:
                    x = x + (layer(x, pos_emb, pad_mask) - x) / (1.0 - p)
            else:
                x = layer(x, pos_emb, pad_mask)
            if i in wanted:
                outputs[i] = x.transpose(1, 2)
        if self.out_proj is not None:
            x = self.out_proj(x)
        layers = [outputs[i % len(self.layers)] for i in return_layers] if return_layers is not None else []
        return x.transpose(1, 2), lengths, layers

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """feats (B, feat_in, T), lengths (B,) -> encoded (B, out, T'), lengths (B,) int64."""
        return self.encode(*self.subsample(feats, lengths))

    def forward_layers(self, feats: Tensor, lengths: Tensor, layers: Sequence[int]) -> tuple[list[Tensor], Tensor]:
        """Outputs (B, d_model, T') of the blocks ``layers`` (0-based, negatives from the end)."""
        depth = len(self.layers)
        outside = [i for i in layers if not -depth <= i < depth]
        if outside:
            raise ValueError(f"layers {outside}: the encoder has {depth} blocks (use 0..{depth - 1}, or -{depth}..-1 from the end)")
        x, lengths = self.subsample(feats, lengths)
        _, lengths, outs = self._run_blocks(x, lengths, return_layers=layers)
        return outs, lengths


def components() -> list[Component]:
    return [
        Component(
            kind="encoder", name="fast_conformer", factory=FastConformerEncoder, config=FastConformerConfig,
            summary="FastConformer encoder (dw_striding subsampling, rel-pos SDPA attention), NeMo-compatible",
        )
    ]
