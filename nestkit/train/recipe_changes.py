"""What changed between the recipe a checkpoint was trained with and the one a run has now.

Both sides are compared with every model component's defaults written out: a recipe that spells
a default (``dist_fn: l2``) where the other leaves it unset has not changed the model, and a
resume must not be refused or told otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from nestkit.errors import RecipeError
from nestkit.recipe import Recipe, model_section
from nestkit.registry import Registry, nested_kinds

UNSET = "(unset)"


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key} {self.old!r} -> {self.new!r}"


def recipe_changes(saved_yaml: str, recipe: Recipe) -> list[Change]:
    """The keys whose values differ between a checkpoint's recipe and ``recipe``: with defaults
    filled in on both sides, or as written on both when the saved one no longer validates (a
    plugin since uninstalled, an older nestkit)."""
    saved = yaml.safe_load(saved_yaml or "{}") or {}
    saved = saved if isinstance(saved, dict) else {}
    old, new = _with_defaults(saved, recipe.registry), _with_defaults(recipe.data, recipe.registry)
    if old is None or new is None:
        old, new = saved, recipe.data
    flat_old, flat_new = _flat(old), _flat(new)
    return [Change(k, flat_old.get(k, UNSET), flat_new.get(k, UNSET)) for k in sorted(flat_old.keys() | flat_new.keys())
            if flat_old.get(k, UNSET) != flat_new.get(k, UNSET)]


def _with_defaults(data: dict[str, Any], registry: Registry) -> dict[str, Any] | None:
    """``data`` with its model's component sections filled in (datasets and optimizer as written);
    None when they do not validate."""
    model = data.get("model")
    if not isinstance(model, Mapping):
        return data
    filled = _component("model", model_section(data), registry)
    return None if filled is None else {**data, "model": {**model, **filled}}


def _component(kind: str, section: Any, registry: Registry) -> dict[str, Any] | None:
    """A component section with its defaults (as JSON values), recursively; None if it does not validate."""
    problems: list[RecipeError] = []
    checked = registry.check(kind, section, kind, problems, nested=False)
    if checked is None:
        return None
    component, config = checked
    filled = {"name": section["name"], **config.model_dump(mode="json")}
    for field, sub_kind in nested_kinds(component.config).items():
        if isinstance(filled.get(field), Mapping):
            sub = _component(sub_kind, filled[field], registry)
            if sub is None:
                return None
            filled[field] = sub
    return filled


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict) or not data:
        return {prefix.rstrip("."): data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out
