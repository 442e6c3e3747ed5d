"""NeMo training configs (model + trainer + exp_manager) to nestkit recipes, with one note line
for every key that is dropped or changed on the way (nothing is dropped silently)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nestkit.errors import RecipeError
from nestkit.interop.nemo import recipe_from_nemo_config
from nestkit.recipe import interpolate, read_yaml
from nestkit.train.config import ExpManagerConfig, TrainerConfig

# NeMo values nestkit spells differently: (key, NeMo value) -> (nestkit value, why).
_TRAINER_VALUES = {
    ("devices", -1): ("auto", "every GPU, else the CPU"),
}
_SECTIONS = ("name", "model", "trainer", "exp_manager")


def _known(section: dict[str, Any], fields: dict[str, Any], where: str, notes: list[str]) -> dict[str, Any]:
    kept = {}
    for key, value in section.items():
        if key not in fields:
            notes.append(f"{where}.{key} has no nestkit equivalent; dropped (was {value!r})")
        elif (key, value) in _TRAINER_VALUES and where == "trainer":
            new, why = _TRAINER_VALUES[(key, value)]
            notes.append(f"{where}.{key}: NeMo's {value!r} written as {new!r} ({why})")
            kept[key] = new
        else:
            kept[key] = value
    return kept


def convert_training_config(path: str | Path) -> tuple[str, list[str]]:
    """(recipe YAML text, note lines) for a NeMo NEST training config file."""
    from nestkit.recipe import load_recipe

    path = Path(path)
    raw = read_yaml(path)
    notes: list[str] = []
    try:
        resolved = interpolate(raw)
        recipe = recipe_from_nemo_config(resolved, notes)
        recipe["trainer"] = _known(resolved.get("trainer") or {}, TrainerConfig.model_fields, "trainer", notes)
        recipe["exp_manager"] = _known(resolved.get("exp_manager") or {}, ExpManagerConfig.model_fields, "exp_manager", notes)
        notes += [f"{key} has no nestkit equivalent; dropped" for key in resolved if key not in _SECTIONS]
        load_recipe(recipe)  # the converted recipe must validate before it is written
    except RecipeError as err:
        raise err.at(str(path)) from None
    header = f"# converted from {path.name} by `nestkit convert-nemo-config`\n"
    return header + yaml.safe_dump(recipe, sort_keys=False), notes
