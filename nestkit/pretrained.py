"""Model-only use of checkpoints: load a trained (or imported) model, save one without a run.

Training checkpoints (``nestkit/train/checkpoint.py``) carry the resolved recipe as YAML text next
to the weights, so a checkpoint alone rebuilds its model; this module does that for extraction,
export and NeMo import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from nestkit.errors import CheckpointError, NestkitError
from nestkit.recipe import Recipe, load_recipe
from nestkit.train.checkpoint import FORMAT, VERSION, atomic_save, load_checkpoint


def recipe_of(state: dict[str, Any], path: str | Path) -> Recipe:
    """The validated recipe stored in a checkpoint."""
    try:
        data = yaml.safe_load(str(state.get("recipe") or ""))
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds no recipe; it cannot rebuild its model")
    try:
        return load_recipe(data)
    except NestkitError as err:
        raise CheckpointError(f"{path}: its recipe no longer validates ({err})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Recipe]:
    """(model in eval mode on ``device``, its recipe) from a nestkit checkpoint."""
    from nestkit import build_model

    state = load_checkpoint(path)
    recipe = recipe_of(state, path)
    model = build_model(recipe)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: weights do not fit the recipe's model ({first})") from None
    return model.to(device).eval(), recipe


def save_model(path: str | Path, model: torch.nn.Module, recipe: Recipe | dict[str, Any], step: int = 0) -> Path:
    """Write a model-only checkpoint (weights + recipe) that training can start from."""
    data = recipe.data if isinstance(recipe, Recipe) else recipe
    path = Path(path)
    atomic_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "recipe": yaml.safe_dump(data, sort_keys=False),
            "step": step,
        },
        path,
    )
    return path
