"""The ``--device`` option of the commands that run a model (bench, extract, probe)."""

from __future__ import annotations

import torch

from nestkit.errors import NestkitError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]``; a missing GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NestkitError(f"--device: unknown device '{name}' (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NestkitError("--device cuda: no CUDA GPU is available here (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise NestkitError(f"--device: unsupported device type '{device.type}' (use auto, cpu or cuda)")
    return device
