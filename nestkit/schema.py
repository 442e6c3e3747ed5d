"""JSON Schema of the recipe format, built after plugins load so it covers every installed
component (editors with a YAML language server then complete and check recipes)."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from nestkit.data.config import DatasetConfig
from nestkit.errors import RecipeError
from nestkit.registry import Component, Registry
from nestkit.train.config import ExpManagerConfig, TrainerConfig

_KIND_KEY = "nestkit_kind"


def _rewrite(node: Any, prefix: str) -> Any:
    """Rename pydantic's local ``$defs`` references and turn component-section fields into refs."""
    if isinstance(node, dict):
        if _KIND_KEY in node:
            kind = node[_KIND_KEY]
            ref = {"$ref": f"#/$defs/section.{kind}"}
            if any(option.get("type") == "null" for option in node.get("anyOf", [])):
                return {"anyOf": [ref, {"type": "null"}], "description": node.get("description", "")}
            return {**ref, "description": node.get("description", "")}
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = f"#/$defs/{prefix}{value.removeprefix('#/$defs/')}"
            else:
                out[key] = _rewrite(value, prefix)
        return out
    if isinstance(node, list):
        return [_rewrite(v, prefix) for v in node]
    return node


def _model_schema(model: type[BaseModel], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(model.model_json_schema())
    for name, sub in schema.pop("$defs", {}).items():
        defs[f"{prefix}{name}"] = _rewrite(sub, prefix)
    return _rewrite(schema, prefix)


def _bare_means(registry: Registry, component: Component) -> bool:
    """Whether a recipe may name ``component`` without its provider (the registry's rule)."""
    try:
        return registry.get(component.kind, component.name) is component
    except RecipeError:  # two plugins share the name: each must be named with its provider
        return False


def recipe_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a nestkit recipe for the installed components."""
    defs: dict[str, Any] = {}
    for kind in registry.kinds():
        variants = []
        for component in registry:
            if component.kind != kind:
                continue
            ref = f"{kind}.{component.qualified_name}"  # every provider's definition, even of one name
            schema = _model_schema(component.config, f"{ref}.", defs)
            names = [component.name, component.qualified_name] if _bare_means(registry, component) else [component.qualified_name]
            schema["properties"] = {"name": {"enum": names, "description": component.summary}, **schema.get("properties", {})}
            schema["required"] = sorted(set(schema.get("required", [])) | ({"name"} if kind != "model" else set()))
            schema["title"] = f"{kind}: {component.qualified_name}"
            if kind == "optimizer":
                schema["properties"]["sched"] = {"anyOf": [{"$ref": "#/$defs/section.scheduler"}, {"type": "null"}]}
            defs[ref] = schema
            variants.append({"$ref": f"#/$defs/{ref}"})
        defs[f"section.{kind}"] = {"anyOf": variants} if variants else {"type": "object"}

    dataset = _model_schema(DatasetConfig, "dataset.", defs)
    defs["dataset"] = dataset
    model_variants = []
    for variant in defs["section.model"].get("anyOf", []):
        ref_name = variant["$ref"].removeprefix("#/$defs/")
        extended = copy.deepcopy(defs[ref_name])
        extended["properties"].update(
            {
                "train_ds": {"anyOf": [{"$ref": "#/$defs/dataset"}, {"type": "null"}]},
                "validation_ds": {"anyOf": [{"$ref": "#/$defs/dataset"}, {"type": "null"}]},
                "optim": {"anyOf": [{"$ref": "#/$defs/section.optimizer"}, {"type": "null"}]},
            }
        )
        defs[ref_name + ".with_data"] = extended
        model_variants.append({"$ref": f"#/$defs/{ref_name}.with_data"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "nestkit recipe",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "description": "experiment name"},
            "extends": {"type": "string", "description": "a recipe this one derives from"},
            "model": {"anyOf": model_variants} if model_variants else {"type": "object"},
            "trainer": _model_schema(TrainerConfig, "trainer.", defs),
            "exp_manager": _model_schema(ExpManagerConfig, "exp_manager.", defs),
        },
        "required": ["model"],
        "$defs": defs,
    }
