"""``torch.compile`` of the encoder blocks, shared by ``nestkit train`` and ``nestkit bench``.

Only the Conformer blocks are compiled: they hold nearly all the FLOPs and their element-wise
work (LayerNorm, SiLU, GLU, BatchNorm, residuals) is what fusing saves. The preprocessor,
masking and quantizer stay eager, so variable-length batches do not multiply recompilations.
``Module.compile`` works in place, so parameter names (and checkpoints) do not change.
"""

from __future__ import annotations

from torch import nn


def compile_encoder_layers(model: nn.Module) -> int:
    """Compile each encoder block in place; returns how many (0 when the model has none)."""
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        return 0
    for layer in layers:
        layer.compile()
    return len(layers)
