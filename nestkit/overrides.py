"""Command-line overrides of a recipe: ``dotted.key=value``, the value read as YAML.

A parent key that looks like a typo of an existing one is an error with a suggestion; every bad
override is reported together; ``section.name=other`` switches a component section and drops,
with a note, the keys the new component does not take.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import yaml

from nestkit.errors import RecipeError, combined, did_you_mean
from nestkit.recipe_yaml import parse_yaml
from nestkit.registry import Registry
from nestkit.sections import section_at, switch_component


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], YAML-typed value)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override '{text}' must look like dotted.key=value")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise RecipeError(f"override '{text}': value is not valid YAML") from None
    return key.split("."), value


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str], registry: Registry | None = None, notes: list[str] | None = None
) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides. A missing parent that looks like a typo of an existing
    key is an error with a suggestion; other missing parents and new leaves are created and
    checked by validation (so an unknown field still fails, with a suggestion). Every bad
    override is reported, together. With ``registry``, ``section.name=other`` switches a component
    section to another component: the keys it does not accept are dropped, with one line in
    ``notes`` naming them."""
    data = copy.deepcopy(data)
    problems: list[RecipeError] = []
    for text in overrides:
        try:
            _apply_override(data, text, registry, notes if notes is not None else [])
        except RecipeError as err:
            problems.append(err)
    if problems:
        raise combined(problems)
    return data


def _apply_override(data: dict[str, Any], text: str, registry: Registry | None, notes: list[str]) -> None:
    parts, value = parse_override(text)
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, dict) and part not in node and not did_you_mean(part, list(node)):
            node[part] = {}  # a section the file leaves at its defaults; validation checks the name
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "the recipe"
            choices = list(node) if isinstance(node, dict) else []
            raise RecipeError(f"override '{text}': {where} has no key '{part}'{did_you_mean(part, choices)}")
        node = node[part]
    if not isinstance(node, dict):
        raise RecipeError(f"override '{text}': {'.'.join(parts[:-1])} is not a mapping")
    old = node.get(parts[-1])
    if parts[-1] == "name" and registry is not None and isinstance(old, str) and isinstance(value, str) and value != old:
        section = section_at(data, parts[:-1], registry)
        dropped = switch_component(node, section.kind, value, registry) if section and section.kind else []
        if dropped:
            notes.append(f"{text}: dropped {', '.join(dropped)} (not fields of {value})")
    node[parts[-1]] = value
