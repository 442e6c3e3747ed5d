"""Encoder-only export of a training checkpoint, for fine-tuning and feature extraction elsewhere.

The file holds what computing encoder outputs from audio needs and nothing else: the encoder's
and the preprocessor's sections and tensors (the preprocessor's window and mel filterbank too:
an imported NeMo model keeps NeMo's). ``nestkit.load_encoder(path)`` rebuilds both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nestkit.errors import CheckpointError
from nestkit.train.atomic_write import atomic_save
from nestkit.train.checkpoint import load_checkpoint

ENCODER_FORMAT = "nestkit-encoder"


def part_state(state: dict[str, Any], part: str) -> dict[str, Any]:
    """The tensors of one part (``encoder``, ``preprocessor``) of a checkpoint, prefix removed."""
    prefix = f"{part}."
    return {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}


def export_encoder(ckpt: str | Path, out: str | Path) -> tuple[Path, int]:
    """Write ``{"format", "encoder_config", "encoder_state_dict", "preprocessor_config",
    "preprocessor_state_dict", "recipe", "step"}`` to ``out``; (path, encoder tensors)."""
    state = load_checkpoint(ckpt)
    weights = part_state(state, "encoder")
    if not weights:
        raise CheckpointError(f"{ckpt}: the checkpoint's model has no 'encoder.' weights")
    recipe_text = str(state.get("recipe") or "")
    try:
        model = (yaml.safe_load(recipe_text) or {}).get("model", {})
    except yaml.YAMLError:
        model = None
    if not isinstance(model, dict) or not isinstance(model.get("encoder"), dict) or not isinstance(model.get("preprocessor"), dict):
        raise CheckpointError(f"{ckpt}: its recipe has no model.encoder and model.preprocessor sections to export")
    out = Path(out)
    atomic_save(
        {"format": ENCODER_FORMAT, "encoder_config": model["encoder"], "encoder_state_dict": weights,
         "preprocessor_config": model["preprocessor"], "preprocessor_state_dict": part_state(state, "preprocessor"),
         "recipe": recipe_text, "step": int(state.get("step", 0))},
        out,
    )
    return out, len(weights)
