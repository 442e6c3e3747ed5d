"""`nestkit schema` validates every bundled recipe and rejects broken ones."""

from __future__ import annotations

import json

import jsonschema
import pytest

from conftest import RECIPES, run_nestkit
from nestkit.recipe import interpolate, load_raw


@pytest.fixture(scope="module")
def schema() -> dict:
    result = run_nestkit("schema")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def bundled_recipes() -> list:
    return sorted(RECIPES.rglob("*.yaml"))


def test_there_are_recipes_to_check() -> None:
    assert len(bundled_recipes()) >= 2


@pytest.mark.parametrize("path", bundled_recipes(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_bundled_recipes_validate_against_the_schema(schema: dict, path) -> None:  # noqa: ANN001
    jsonschema.Draft202012Validator(schema).validate(interpolate(load_raw(path)))


def test_schema_rejects_typos_and_wrong_types(schema: dict) -> None:
    recipe = interpolate(load_raw(RECIPES / "nest_fast_conformer.yaml"))
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(recipe)
    recipe["model"]["encoder"]["n_layer"] = 3
    assert not validator.is_valid(recipe)
    del recipe["model"]["encoder"]["n_layer"]
    recipe["trainer"]["max_steps"] = "many"
    assert not validator.is_valid(recipe)
