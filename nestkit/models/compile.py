"""``torch.compile`` of the encoder blocks, shared by ``nestkit train`` and ``nestkit bench``.

Only the Conformer blocks are compiled: they hold nearly all the FLOPs and their element-wise
work (LayerNorm, SiLU, GLU, BatchNorm, residuals) is what fusing saves. The preprocessor,
masking and quantizer stay eager, so variable-length batches do not multiply recompilations.
``Module.compile`` works in place, so parameter names (and checkpoints) do not change.
"""

from __future__ import annotations

from torch import nn


def encoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The model's list of encoder blocks, or None when it has none."""
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    return layers if isinstance(layers, nn.ModuleList) else None


def compile_encoder_layers(model: nn.Module) -> int:
    """Compile each encoder block in place; returns how many (0 when the model has none)."""
    layers = encoder_layers(model)
    if layers is None:
        return 0
    for layer in layers:
        layer.compile()
    return len(layers)
