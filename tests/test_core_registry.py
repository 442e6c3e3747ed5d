"""The registry: typed building, nested sections, duplicates across providers, 0.1-style factories."""

from __future__ import annotations

import pytest
from pydantic import Field, model_validator

from nestkit.errors import RecipeError, RecipeErrors
from nestkit.plugins import load_registry
from nestkit.registry import Component, ComponentConfig, Registry, section_field


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


class Linear:
    def __init__(self, cfg: LinearConfig) -> None:
        self.cfg = cfg


def make_stack(cfg: StackConfig, *, registry: Registry) -> tuple:
    return ("stack", registry.build("encoder", cfg.inner, key="inner"), cfg.n_heads, cfg.d_model)


@pytest.fixture()
def registry() -> Registry:
    reg = Registry()
    reg.add(Component("encoder", "linear", Linear, LinearConfig, "a linear map"), provider="pkg-a", version="1.0")
    reg.add(Component("model", "stack", make_stack, StackConfig, "a stack"), provider="pkg-a", version="1.0")
    return reg


def test_build_passes_the_typed_config(registry: Registry) -> None:
    built = registry.build("encoder", {"name": "linear", "d_in": "7", "scale": 2})
    assert isinstance(built.cfg, LinearConfig)
    assert (built.cfg.d_in, built.cfg.d_out, built.cfg.scale) == (7, 2, 2.0)
    assert isinstance(built.cfg.scale, float)


def test_nested_sections_are_built_from_the_same_registry(registry: Registry) -> None:
    other = Registry()  # a registry without 'linear': building the stack from it must fail
    other.add(Component("model", "stack", make_stack, StackConfig, "a stack"), provider="pkg-a")
    section = {"name": "stack", "inner": {"name": "linear", "d_in": 3}}
    kind, inner, n_heads, d_model = registry.build("model", section)
    assert (kind, inner.cfg.d_in, n_heads, d_model) == ("stack", 3, 2, 8)
    with pytest.raises(RecipeError, match=r"^model\.inner\.name: unknown encoder 'linear' \(installed: none\)$"):
        other.build("model", section)


def test_each_config_is_validated_once_per_build(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"linear": 0, "stack": 0}
    for model, name in ((LinearConfig, "linear"), (StackConfig, "stack")):
        original = model.model_validate.__func__

        def counting(cls, *args, _original=original, _name=name, **kwargs):  # noqa: ANN001, ANN202
            calls[_name] += 1
            return _original(cls, *args, **kwargs)

        monkeypatch.setattr(model, "model_validate", classmethod(counting))
    registry.build("model", {"name": "stack", "inner": {"name": "linear", "d_in": 3}})
    assert calls == {"linear": 1, "stack": 1}


def test_validate_reports_every_problem_with_its_full_key(registry: Registry) -> None:
    bad = {"name": "stack", "n_heads": "two", "d_modl": 8, "inner": {"name": "linear", "d_in": "three", "d_out": []}}
    problems: list[RecipeError] = []
    assert registry.check("model", bad, "model", problems) is None
    assert [str(e) for e in problems] == [
        "model.n_heads: expected an integer, got 'two'",
        "model: unknown field 'd_modl'; did you mean 'd_model'?",
        "model.inner.d_in: expected an integer, got 'three'",
        "model.inner.d_out: expected an integer, got list",
    ]


def test_cross_field_check_is_one_line(registry: Registry) -> None:
    with pytest.raises(RecipeError) as err:
        registry.build("model", {"name": "stack", "inner": {"name": "linear"}, "n_heads": 3}, key="model")
    assert not isinstance(err.value, RecipeErrors)
    assert str(err.value) == "model: n_heads (3) must divide d_model (8)"


def test_unknown_name_and_field_suggest(registry: Registry) -> None:
    with pytest.raises(RecipeError, match=r"unknown encoder 'linaer'; did you mean 'linear'\? \(installed: linear\)"):
        registry.build("encoder", {"name": "linaer"})
    with pytest.raises(RecipeError, match=r"^encoder: unknown field 'd_ot'; did you mean 'd_out'\?$"):
        registry.build("encoder", {"name": "linear", "d_ot": 3})


def test_duplicate_names_across_providers_need_an_explicit_choice(registry: Registry) -> None:
    registry.add(Component("encoder", "linear", lambda cfg: ("b", cfg.d_in), LinearConfig, "another"), provider="pkg-b", version="2.0")
    with pytest.raises(RecipeError) as err:
        registry.build("encoder", {"name": "linear"})
    assert "pkg-a:linear and pkg-b:linear" in str(err.value)
    assert registry.build("encoder", {"name": "pkg-b:linear", "d_in": 1}) == ("b", 1)
    with pytest.raises(ValueError, match="twice"):
        registry.add(Component("encoder", "linear", Linear, LinearConfig, "again"), provider="pkg-b")


def test_one_invalid_component_adds_none_of_its_batch(registry: Registry) -> None:
    ok = Component("decoder", "fine", Linear, LinearConfig, "")
    with pytest.raises(ValueError, match="unknown kind 'encodr'"):
        registry.add(ok, Component("encodr", "x", Linear, LinearConfig, ""), provider="pkg-c")
    assert registry.names("decoder") == []


def test_unknown_kind_and_non_pydantic_config_are_rejected() -> None:
    reg = Registry()
    with pytest.raises(ValueError, match="unknown kind 'encodr'"):
        reg.add(Component("encodr", "x", Linear, LinearConfig, ""), provider="p")
    with pytest.raises(ValueError, match="pydantic"):
        reg.add(Component("encoder", "x", Linear, dict, ""), provider="p")  # type: ignore[arg-type]


def test_a_component_no_recipe_could_use_is_refused_with_all_of_its_batch() -> None:
    reg = Registry()
    good = Component("encoder", "linear", Linear, LinearConfig, "")
    with pytest.raises(ValueError, match=r"^p registers encoder 'a:b': component names cannot contain ':'"):
        reg.add(good, Component("encoder", "a:b", Linear, LinearConfig, ""), provider="p")
    with pytest.raises(TypeError, match=r"^register\(\) expects nestkit.Component, got str$"):
        reg.add(good, "linear", provider="p")  # type: ignore[arg-type]
    assert list(reg) == []  # all or nothing


def make_linear_01(*, d_in: int, d_out: int, scale: float, params: object = None) -> tuple:
    """A factory written for nestkit 0.1: the config's fields as keywords (plus context)."""
    return ("linear", d_in, d_out, scale, params)


class Gain01:
    """A 0.1-style class factory with positional-or-keyword fields."""

    def __init__(self, d_in: int = 4, d_out: int = 2, scale: float = 1.0) -> None:
        self.fields = (d_in, d_out, scale)


def test_factories_taking_fields_as_keywords_still_work_and_warn() -> None:
    reg = Registry()
    with pytest.warns(DeprecationWarning, match=r"pkg-old encoder 'old': .*factory\(config, \*\*context\)"):
        reg.add(Component("encoder", "old", make_linear_01, LinearConfig, "0.1 style"), provider="pkg-old")
    with pytest.warns(DeprecationWarning, match="'gain'"):
        reg.add(Component("encoder", "gain", Gain01, LinearConfig, "0.1 style class"), provider="pkg-old")
    assert reg.build("encoder", {"name": "old", "d_in": "5"}, params="P") == ("linear", 5, 2, 1.0, "P")
    assert reg.build("encoder", {"name": "gain", "scale": 3}).fields == (4, 2, 3.0)


def test_builtin_components_come_through_the_entry_point() -> None:
    registry = load_registry()
    assert "builtin" in registry.plugins
    assert registry.plugins["builtin"].startswith("nestkit ")
    adamw = registry.get("optimizer", "adamw")
    assert adamw.provider == "nestkit"
    assert not registry.failures
