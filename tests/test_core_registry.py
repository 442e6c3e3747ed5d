"""The registry: typed building, nested sections, duplicates across providers."""

from __future__ import annotations

import pytest
from pydantic import Field, model_validator

from nestkit.errors import RecipeError
from nestkit.plugins import load_registry
from nestkit.registry import Component, ComponentConfig, Registry, build_from, section_field


class LinearConfig(ComponentConfig):
    d_in: int = Field(4, gt=0)
    d_out: int = 2
    scale: float = 1.0


class StackConfig(ComponentConfig):
    inner: dict = section_field("encoder")
    n_heads: int = 2
    d_model: int = 8

    @model_validator(mode="after")
    def _heads_divide(self) -> StackConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        return self


def make_linear(*, d_in: int, d_out: int, scale: float) -> tuple:
    return ("linear", d_in, d_out, scale)


def make_stack(*, inner: dict, n_heads: int, d_model: int, reg: Registry) -> tuple:
    return ("stack", build_from(reg, "encoder", inner), n_heads, d_model)


@pytest.fixture()
def registry() -> Registry:
    reg = Registry()
    reg.add(Component("encoder", "linear", make_linear, LinearConfig, "a linear map"), provider="pkg-a", version="1.0")
    reg.add(Component("model", "stack", make_stack, StackConfig, "a stack"), provider="pkg-a", version="1.0")
    return reg


def test_build_passes_typed_values(registry: Registry) -> None:
    built = build_from(registry, "encoder", {"name": "linear", "d_in": "7", "scale": 2})
    assert built == ("linear", 7, 2, 2.0)
    assert isinstance(built[3], float)


def test_nested_sections_are_built_and_errors_name_the_full_key(registry: Registry) -> None:
    section = {"name": "stack", "inner": {"name": "linear", "d_in": 3}}
    assert build_from(registry, "model", section, key="model", reg=registry) == ("stack", ("linear", 3, 2, 1.0), 2, 8)
    bad = {"name": "stack", "inner": {"name": "linear", "d_in": "three"}}
    with pytest.raises(RecipeError, match=r"^model\.inner\.d_in: expected an integer, got 'three'$"):
        build_from(registry, "model", bad, key="model", reg=registry)


def test_cross_field_check_is_one_line(registry: Registry) -> None:
    with pytest.raises(RecipeError) as err:
        build_from(registry, "model", {"name": "stack", "inner": {"name": "linear"}, "n_heads": 3}, key="model")
    assert str(err.value) == "model: n_heads (3) must divide d_model (8)"


def test_unknown_name_and_field_suggest(registry: Registry) -> None:
    with pytest.raises(RecipeError, match=r"unknown encoder 'linaer'; did you mean 'linear'\? \(installed: linear\)"):
        build_from(registry, "encoder", {"name": "linaer"})
    with pytest.raises(RecipeError, match=r"^encoder: unknown field 'd_ot'; did you mean 'd_out'\?$"):
        build_from(registry, "encoder", {"name": "linear", "d_ot": 3})


def test_duplicate_names_across_providers_need_an_explicit_choice(registry: Registry) -> None:
    registry.add(Component("encoder", "linear", make_linear, LinearConfig, "another"), provider="pkg-b", version="2.0")
    with pytest.raises(RecipeError) as err:
        build_from(registry, "encoder", {"name": "linear"})
    assert "pkg-a:linear and pkg-b:linear" in str(err.value)
    assert build_from(registry, "encoder", {"name": "pkg-b:linear", "d_in": 1}) == ("linear", 1, 2, 1.0)
    with pytest.raises(ValueError, match="twice"):
        registry.add(Component("encoder", "linear", make_linear, LinearConfig, "again"), provider="pkg-b")


def test_unknown_kind_and_non_pydantic_config_are_rejected() -> None:
    reg = Registry()
    with pytest.raises(ValueError, match="unknown kind 'encodr'"):
        reg.add(Component("encodr", "x", make_linear, LinearConfig, ""), provider="p")
    with pytest.raises(ValueError, match="pydantic"):
        reg.add(Component("encoder", "x", make_linear, dict, ""), provider="p")  # type: ignore[arg-type]


def test_builtin_components_come_through_the_entry_point() -> None:
    registry = load_registry()
    assert "builtin" in registry.plugins
    assert registry.plugins["builtin"].startswith("nestkit ")
    adamw = registry.get("optimizer", "adamw")
    assert adamw.provider == "nestkit"
    assert not registry.failures
