"""A plugin that registers an encoder under a built-in's name, ``fast_conformer``: recipes that say
``fast_conformer`` keep the built-in, and this one is ``nestkit-clash:fast_conformer``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field

import nestkit


class StridedConvConfig(nestkit.ComponentConfig):
    feat_in: int = Field(80, gt=0, description="input feature channels")
    d_model: int = Field(64, gt=0, description="output channels")
    subsampling_factor: int = Field(8, gt=0, description="time stride")


class StridedConvEncoder(torch.nn.Module):
    """(B, feat_in, T) -> (B, d_model, T // subsampling_factor) with one strided Conv1d."""

    def __init__(self, cfg: StridedConvConfig) -> None:
        super().__init__()
        self.factor = cfg.subsampling_factor
        self.conv = torch.nn.Conv1d(cfg.feat_in, cfg.d_model, kernel_size=cfg.subsampling_factor, stride=cfg.subsampling_factor)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(feats), lengths // self.factor


@nestkit.hookimpl
def nestkit_register_components(register: Callable[[nestkit.Component], None]) -> None:
    register(nestkit.Component(kind="encoder", name="fast_conformer", factory=StridedConvEncoder,
                               config=StridedConvConfig, summary="not a conformer: one strided convolution (test plugin)"))
