"""NeMo training configs (model + trainer + exp_manager) to nestkit recipes, with a report of
every key that has no nestkit equivalent (nothing is dropped silently)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nestkit.data.config import DatasetConfig
from nestkit.errors import RecipeError
from nestkit.interop.nemo import recipe_from_nemo_config
from nestkit.recipe import interpolate, read_yaml
from nestkit.train.config import ExpManagerConfig, TrainerConfig

_TRAINER_VALUES = {
    ("devices", -1): "auto",
    ("strategy", "ddp_find_unused_parameters_true"): "ddp",
    ("precision", "bf16"): "bf16-mixed",
    ("precision", 16): "16-mixed",
}


def _known(section: dict[str, Any], fields: dict[str, Any], where: str, report: list[str]) -> dict[str, Any]:
    kept = {}
    for key, value in section.items():
        if key in fields:
            kept[key] = _TRAINER_VALUES.get((key, value), value) if where == "trainer" else value
        else:
            report.append(f"{where}.{key} has no nestkit equivalent; dropped (was {value!r})")
    return kept


def convert_training_config(path: str | Path) -> tuple[str, list[str]]:
    """(recipe YAML text, report lines) for a NeMo NEST training config file."""
    from nestkit.recipe import load_recipe

    path = Path(path)
    raw = read_yaml(path)
    report: list[str] = []
    try:
        resolved = interpolate(raw)
        model_in = resolved.get("model", {})
        for split in ("train_ds", "validation_ds"):
            for key in (model_in.get(split) or {}):
                if key not in DatasetConfig.model_fields:
                    report.append(f"model.{split}.{key} has no nestkit equivalent; dropped")
            if (model_in.get(split) or {}).get("manifest_filepath") == "???":
                report.append(f"model.{split}.manifest_filepath is unset (???): nestkit trains on its demo data until you set it")
        recipe = recipe_from_nemo_config(resolved)
        recipe["trainer"] = _known(resolved.get("trainer") or {}, TrainerConfig.model_fields, "trainer", report)
        exp = _known(resolved.get("exp_manager") or {}, ExpManagerConfig.model_fields, "exp_manager", report)
        recipe["exp_manager"] = exp
        load_recipe(recipe)  # the converted recipe must validate before it is written
    except RecipeError as err:
        raise err.at(str(path)) from None
    header = f"# converted from {path.name} by `nestkit convert-nemo-config`\n"
    return header + yaml.safe_dump(recipe, sort_keys=False), report
