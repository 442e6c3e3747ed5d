"""nestkit: typed, plugin-based self-supervised speech pretraining.

Public API (kept import-light: torch loads only when a model is built)::

    recipe = nestkit.load_recipe("recipes/nest_fast_conformer.yaml", ["trainer.max_steps=10"])
    nestkit.registry.components("encoder")      # what is installed
    encoder = nestkit.build("encoder", {"name": "fast_conformer", "feat_in": 80, ...})
    model = nestkit.build_model(recipe)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nestkit import registry
from nestkit.errors import NestkitError, RecipeError
from nestkit.hookspecs import hookimpl
from nestkit.registry import Component, ComponentConfig, section_field

if TYPE_CHECKING:
    from pathlib import Path

    from nestkit.recipe import Recipe

__version__ = "0.1.0"
__all__ = [
    "Component",
    "ComponentConfig",
    "NestkitError",
    "RecipeError",
    "build",
    "build_model",
    "hookimpl",
    "load_recipe",
    "registry",
    "section_field",
]


def load_recipe(path: str | Path | dict[str, Any], overrides: tuple[str, ...] | list[str] = ()) -> Recipe:
    """Load, resolve (extends, overrides, ``${...}``) and validate a recipe."""
    from nestkit.recipe import load_recipe as _load

    return _load(path, overrides)


def build(kind: str, section: dict[str, Any], **context: Any) -> Any:
    """Build the component described by ``section`` (``{"name": ..., **fields}``) of ``kind``."""
    return registry.build_from(registry.get_registry(), kind, section, key=kind, **context)


def build_model(recipe: Recipe | str | Path | dict[str, Any], overrides: tuple[str, ...] | list[str] = ()) -> Any:
    """The recipe's model (a ``torch.nn.Module``) from a recipe object, path or mapping."""
    from nestkit.recipe import Recipe as _Recipe

    if not isinstance(recipe, _Recipe):
        recipe = load_recipe(recipe, overrides)
    return registry.build_from(registry.get_registry(), "model", recipe.model_section, key="model")
