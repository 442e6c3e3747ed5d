"""An LSTM encoder, written as a third-party plugin from README.md and CONTRIBUTING.md alone.

It implements only what every encoder must: ``forward(feats (B, feat_in, T), lengths (B,))`` ->
``(encoded (B, d_model, T // subsampling_factor), lengths // subsampling_factor)``, and none of
the optional capabilities (no subsample/encode for post_conv masking, no forward_layers for
``nestkit extract --layer``, no blocks to compile or checkpoint). The LSTM runs forward in time
only, so padding after an utterance never reaches its valid frames.

Two flaws are on purpose, for nestkit's tests: a ``hidden_size`` below ``d_model`` is refused with
a ValueError only when the encoder is built (the config could have checked it), and an ``init``
other than the two it knows is a KeyError (the config should have listed them as a Literal).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field

import nestkit


class TinyLSTMConfig(nestkit.ComponentConfig):
    feat_in: int = Field(80, gt=0, description="input feature channels (the preprocessor's features)")
    d_model: int = Field(64, gt=0, description="output channels")
    hidden_size: int | None = Field(None, gt=0, description="LSTM units, projected down to d_model when larger (null: d_model)")
    n_layers: int = Field(1, ge=1, description="stacked LSTM layers")
    subsampling_factor: int = Field(4, ge=1, description="feature frames stacked into one LSTM step")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout between LSTM layers")
    init: str = Field("default", description="LSTM weight init: default (PyTorch's) or orthogonal")


def _orthogonal(lstm: torch.nn.LSTM) -> None:
    for name, weight in lstm.named_parameters():
        if name.startswith("weight_hh"):
            torch.nn.init.orthogonal_(weight)


_INITS: dict[str, Callable[[torch.nn.LSTM], None]] = {"default": lambda lstm: None, "orthogonal": _orthogonal}


class TinyLSTMEncoder(torch.nn.Module):
    """(B, feat_in, T) -> (B, d_model, T // subsampling_factor): stacked frames, a linear layer, an LSTM."""

    def __init__(self, cfg: TinyLSTMConfig) -> None:
        super().__init__()
        hidden = cfg.hidden_size or cfg.d_model
        if hidden < cfg.d_model:
            raise ValueError(f"hidden_size ({hidden}) must be at least d_model ({cfg.d_model})")
        self.factor = cfg.subsampling_factor
        self.stack = torch.nn.Linear(cfg.feat_in * cfg.subsampling_factor, hidden)
        self.lstm = torch.nn.LSTM(
            hidden, hidden, num_layers=cfg.n_layers, batch_first=True,
            dropout=cfg.dropout if cfg.n_layers > 1 else 0.0, proj_size=cfg.d_model if cfg.d_model < hidden else 0,
        )
        _INITS[cfg.init](self.lstm)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, channels, frames = feats.shape
        steps = frames // self.factor
        stacked = feats[:, :, : steps * self.factor].reshape(batch, channels, steps, self.factor)
        stacked = stacked.permute(0, 2, 1, 3).reshape(batch, steps, channels * self.factor)
        encoded, _ = self.lstm(self.stack(stacked))
        return encoded.transpose(1, 2), lengths // self.factor


@nestkit.hookimpl
def nestkit_register_components(register: Callable[[nestkit.Component], None]) -> None:
    register(nestkit.Component(kind="encoder", name="tiny_lstm", factory=TinyLSTMEncoder, config=TinyLSTMConfig,
                               summary="stacked frames and an LSTM (test plugin, no optional capabilities)"))
