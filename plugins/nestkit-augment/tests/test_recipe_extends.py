"""This package's recipes extend nestkit's bundled demo as `nestkit:nest_demo.yaml`: they load
from any folder, not only from a nestkit checkout's plugins/ folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import nestkit
from nestkit.errors import RecipeError
from nestkit.recipe import bundled_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_a_copied_recipe_still_extends_the_bundled_demo(tmp_path: Path) -> None:
    copy = shutil.copy(RECIPES / "reverb_demo.yaml", tmp_path / "reverb_demo.yaml")
    recipe = nestkit.load_recipe(copy)
    demo = nestkit.load_recipe(bundled_recipe("nest_demo.yaml"))
    assert recipe.name == "NEST-demo-reverb" and recipe.data["model"]["encoder"] == demo.data["model"]["encoder"]
    assert recipe.trainer.max_steps == demo.trainer.max_steps


def test_an_unknown_bundled_recipe_is_one_line(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text("extends: nestkit:nest_demo_typo.yaml\nname: child\n")
    with pytest.raises(RecipeError) as caught:
        nestkit.load_recipe(child)
    assert str(caught.value).startswith(f"{child}: extends: nestkit has no bundled recipe 'nest_demo_typo.yaml' "
                                        "(bundled: nest_demo.yaml, nest_fast_conformer.yaml, ")
    assert "\n" not in str(caught.value)
