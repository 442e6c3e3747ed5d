"""Model-only use of checkpoints: load a trained (or imported) model or an exported encoder, save
a model without a run.

Training checkpoints (``nestkit/train/checkpoint.py``) carry the resolved recipe as YAML text next
to the weights, so a checkpoint alone rebuilds its model; this module does that for Python users
(``nestkit.load_model``, ``nestkit.load_encoder``), extraction, export and NeMo import.

Shapes, everywhere in nestkit: NeMo's channels-first layout. Features and encoder outputs are
(B, D, T) tensors in Python and (D, T) arrays per utterance in files (``nestkit extract``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml

from nestkit.errors import CheckpointError, NestkitError
from nestkit.recipe import Recipe, load_recipe
from nestkit.train.atomic_write import atomic_save
from nestkit.train.checkpoint import FORMAT, VERSION, load_checkpoint, read_tensors
from nestkit.train.export import ENCODER_FORMAT


class Pretrained(NamedTuple):
    """A checkpoint's model (eval mode) and the recipe it was built from; unpacks as a pair."""

    model: torch.nn.Module
    recipe: Recipe


class PretrainedEncoder(NamedTuple):
    """An exported encoder and the preprocessor that computes its input (both in eval mode):
    ``preprocessor(audio (B, samples), audio_len) -> (feats (B, D, T), feats_len)`` and
    ``encoder(feats, feats_len) -> (encoded (B, d_model, T'), encoded_len)``."""

    encoder: torch.nn.Module
    preprocessor: torch.nn.Module


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


def _fit(module: torch.nn.Module, weights: dict[str, Any], path: str | Path, what: str) -> None:
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: {what} do not fit the recipe's model ({first})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """(model in eval mode on ``device``, its recipe) from a nestkit checkpoint."""
    state = load_checkpoint(path)
    recipe = recipe_of(state, path)
    model = recipe.build_model()
    _fit(model, state["model"], path, "weights")
    return Pretrained(model.to(device).eval(), recipe)


def _read_encoder_file(path: Path) -> dict[str, Any]:
    """An ``export-encoder`` file, read on the CPU without running any code from it."""
    if not path.is_file():
        raise CheckpointError(f"no encoder file at {path}")
    state = read_tensors(path, "encoder file")
    if not isinstance(state, dict) or state.get("format") != ENCODER_FORMAT:
        raise CheckpointError(f"{path}: not a file of `nestkit export-encoder` (use nestkit.load_model for checkpoints)")
    return state


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> PretrainedEncoder:
    """The encoder and its preprocessor from a file of ``nestkit export-encoder``."""
    from nestkit.plugins import get_registry

    state = _read_encoder_file(Path(path))
    if "preprocessor_config" not in state:
        raise CheckpointError(f"{path}: written by an older `nestkit export-encoder` without its preprocessor; export it again")
    parts = []
    for kind in ("encoder", "preprocessor"):
        try:
            module = get_registry().build(kind, dict(state[f"{kind}_config"]), key=kind)
        except NestkitError as err:
            raise CheckpointError(f"{path}: its {kind} config no longer validates ({err})") from None
        _fit(module, state[f"{kind}_state_dict"], path, f"{kind} weights")
        parts.append(module.to(device).eval())
    return PretrainedEncoder(*parts)


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
