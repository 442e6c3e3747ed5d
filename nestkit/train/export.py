"""Encoder-only export of a training checkpoint, for fine-tuning elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nestkit.errors import CheckpointError
from nestkit.train.checkpoint import atomic_save, load_checkpoint

PREFIX = "encoder."


def encoder_state(state: dict[str, Any]) -> dict[str, Any]:
    """The encoder's tensors of a checkpoint, with the ``encoder.`` prefix removed."""
    weights = {k[len(PREFIX):]: v for k, v in state["model"].items() if k.startswith(PREFIX)}
    if not weights:
        raise CheckpointError("the checkpoint's model has no 'encoder.' weights")
    return weights


def export_encoder(ckpt: str | Path, out: str | Path) -> tuple[Path, int]:
    """Write ``{"encoder_state_dict", "encoder_config", "recipe", "step"}`` to ``out``; (path, tensors)."""
    state = load_checkpoint(ckpt)
    weights = encoder_state(state)
    recipe_text = str(state.get("recipe") or "")
    try:
        config = (yaml.safe_load(recipe_text) or {}).get("model", {}).get("encoder", {}) if recipe_text else {}
    except yaml.YAMLError:
        config = {}
    out = Path(out)
    atomic_save(
        {"format": "nestkit-encoder", "encoder_state_dict": weights, "encoder_config": config,
         "recipe": recipe_text, "step": int(state.get("step", 0))},
        out,
    )
    return out, len(weights)
