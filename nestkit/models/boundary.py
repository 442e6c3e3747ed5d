"""What a component hands back to the model, checked on shapes and dtypes only (no device read).

A plugin encoder that returns (B, T', D) instead of (B, D, T'), one tensor instead of a pair, or
float64, otherwise surfaces as a matmul or unpacking error deep inside the decoder or the loss.
Here it is one line naming the component and what :mod:`nestkit.contracts` expects, exit code 1
(a bug in the component, not in the recipe).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nestkit.plugin_errors import ComponentError

# What the decoder's float32 weights take: float32, or a half type under autocast.
FLOAT_OUTPUTS = (torch.float32, torch.bfloat16, torch.float16)


def _described(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


def encoding_problem(out: Any, batch: int, channels: int | None) -> str | None:
    """Why ``out`` breaks :class:`nestkit.contracts.Encoder` for a batch of ``batch`` utterances
    and the decoder's ``channels`` input size (None: unknown), or None."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
        return f"returned {_described(out)}, expected a pair (encoded (B, d_out, T'), lengths (B,))"
    encoded, lengths = out
    want = f"(B={batch}, {channels if channels is not None else 'd_out'}, T') channels first"
    if encoded.dim() != 3 or encoded.shape[0] != batch or (channels is not None and encoded.shape[1] != channels):
        return f"returned encoded {tuple(encoded.shape)}, expected {want}"
    if encoded.dtype not in FLOAT_OUTPUTS:
        return f"returned encoded as {encoded.dtype}, expected float32 (bfloat16 or float16 under autocast)"
    if tuple(lengths.shape) != (batch,) or lengths.is_floating_point() or lengths.dtype == torch.bool:
        return f"returned lengths {tuple(lengths.shape)} {lengths.dtype}, expected ({batch},) integers"
    return None


def audio_problem(audio: Any, lengths: Any, name: str = "audio") -> str | None:
    """Why ``audio``/``lengths`` are not a model's input, (B, T) float samples and (B,) integer
    lengths, or None. Shapes only: that every length fits T is not read back from the device."""
    def typed(value: Any) -> str:
        return _described(value) + (f" {value.dtype}" if isinstance(value, Tensor) else "")

    if not isinstance(audio, Tensor) or audio.dim() != 2 or not audio.is_floating_point():
        return f"{name} is {typed(audio)}, expected (B, T) float samples"
    if (not isinstance(lengths, Tensor) or tuple(lengths.shape) != tuple(audio.shape[:1])
            or lengths.is_floating_point() or lengths.dtype == torch.bool):
        return f"{name}_len is {typed(lengths)}, expected ({audio.shape[0]},) integer sample counts"
    return None


def loss_problem(loss: Any, training: bool) -> str | None:
    """Why ``loss`` cannot be what a training step backpropagates, or None."""
    if not isinstance(loss, Tensor) or loss.dim() != 0 or not loss.is_floating_point():
        return f"returned {_described(loss)}, expected a scalar floating-point loss"
    if training and torch.is_grad_enabled() and not loss.requires_grad:
        return "returned a loss without gradient (computed under no_grad, or detached)"
    return None


def checked(problem: str | None, key: str, component: str) -> None:
    """Raise ``problem`` as the one-line error of the component ``component`` at ``key``."""
    if problem is not None:
        raise ComponentError(f"{problem} (see nestkit.contracts)", key, component, exit_code=1)
