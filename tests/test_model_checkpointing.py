"""Activation checkpointing of the encoder blocks: same numbers, less memory kept for backward."""

from __future__ import annotations

import torch

import nestkit
from nestkit.models.encoder_blocks import checkpoint_encoder_layers

from test_model_components import nest_section
from test_model_nest import audio_batch


def _step(checkpointed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """(gradients, buffers, bytes saved for backward) of one training forward/backward."""
    torch.manual_seed(1)
    section = nest_section(subsampling_conv_channels=8)
    section["encoder"].update(n_layers=3, dropout=0.2, dropout_att=0.1)
    model = nestkit.build("model", section).train()
    assert checkpoint_encoder_layers(model, checkpointed) == (3 if checkpointed < 0 else checkpointed)
    audio, lengths = audio_batch()
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    torch.manual_seed(2)  # the same masks and dropout draws in every variant
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(audio, lengths, audio + 0.01 * torch.randn_like(audio), lengths)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, {n: b.clone() for n, b in model.named_buffers()}, sum(saved)


def test_checkpointed_blocks_give_the_same_gradients_and_statistics_for_less_memory() -> None:
    base_grads, base_buffers, base_saved = _step(0)
    previous = base_saved
    for count in (1, -1):
        grads, buffers, saved = _step(count)
        assert grads.keys() == base_grads.keys()
        for name, g in grads.items():  # dropout replayed with the same masks
            torch.testing.assert_close(g, base_grads[name], rtol=1e-5, atol=1e-7, msg=name)
        for name, b in buffers.items():  # BatchNorm counted the batch once
            torch.testing.assert_close(b, base_buffers[name], rtol=0, atol=0, msg=name)
        assert saved < previous, (count, saved, previous)
        previous = saved


def test_no_blocks_to_checkpoint() -> None:
    assert checkpoint_encoder_layers(torch.nn.Linear(2, 2), -1) == 0
    model = nestkit.build("model", nest_section(subsampling_conv_channels=8))
    assert checkpoint_encoder_layers(model, 0) == 0
