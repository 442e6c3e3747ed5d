"""The typed component registry: every buildable part of nestkit goes through it.

A component is a kind (``encoder``), a name (``fast_conformer``), a factory, a pydantic
config model and a one-line summary; the plugin that registered it is its provider.
Building a component validates its recipe section against the config model and calls the
factory with the typed field values as keyword arguments (plus any context such as the
model's parameters for an optimizer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nestkit.errors import RecipeError, did_you_mean

KINDS: tuple[str, ...] = (
    "preprocessor",
    "encoder",
    "masking",
    "quantizer",
    "decoder",
    "loss",
    "augmentor",
    "feature_augmentor",
    "optimizer",
    "scheduler",
    "model",
)

_KIND_KEY = "nestkit_kind"


class ComponentConfig(BaseModel):
    """Base of every component's config: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def section_field(kind: str, default: Any = ..., description: str = "") -> Any:
    """A config field that holds another component's section (a mapping with ``name:``).

    The registry validates such a field recursively, so errors point at the nested key.
    """
    desc = description or f"a {kind} section: `name:` plus that component's fields"
    if default is ...:
        return Field(..., description=desc, json_schema_extra={_KIND_KEY: kind})
    return Field(default=default, description=desc, json_schema_extra={_KIND_KEY: kind})


@dataclass(frozen=True)
class Component:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    config: type[ComponentConfig]
    summary: str
    provider: str = ""
    version: str = ""

    @property
    def qualified_name(self) -> str:
        return f"{self.provider}:{self.name}"


@dataclass
class PluginFailure:
    """A plugin that could not be imported or could not register."""

    plugin: str
    provider: str
    error: str


@dataclass
class Registry:
    """All components known to this process, keyed by kind and name."""

    _components: dict[tuple[str, str], list[Component]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    plugins: dict[str, str] = field(default_factory=dict)  # plugin name -> "dist version"

    def add(self, component: Component, provider: str = "", version: str = "") -> None:
        if component.kind not in KINDS:
            raise ValueError(
                f"{provider or '?'} registers {component.name!r} under unknown kind "
                f"{component.kind!r}; kinds are {', '.join(KINDS)}"
            )
        if not (isinstance(component.config, type) and issubclass(component.config, BaseModel)):
            raise ValueError(f"{component.kind} {component.name!r}: config must be a pydantic model")
        component = replace(
            component, provider=component.provider or provider, version=component.version or version
        )
        same = self._components.setdefault((component.kind, component.name), [])
        if any(c.provider == component.provider for c in same):
            raise ValueError(
                f"{component.provider} registers {component.kind} {component.name!r} twice"
            )
        same.append(component)

    def kinds(self) -> tuple[str, ...]:
        return KINDS

    def __iter__(self) -> Iterator[Component]:
        for key in sorted(self._components):
            yield from self._components[key]

    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self._components if k == kind)

    def get(self, kind: str, name: str, key: str = "") -> Component:
        """Look up ``name`` (or ``provider:name``) of ``kind``; errors name the recipe key."""
        where = key or kind
        provider, _, bare = name.rpartition(":")
        candidates = self._components.get((kind, bare), [])
        if provider:
            candidates = [c for c in candidates if c.provider == provider]
        if not candidates:
            installed = self.names(kind)
            hint = did_you_mean(bare, installed)
            listing = ", ".join(installed) if installed else "none"
            raise RecipeError(
                f"unknown {kind} '{name}'{hint} (installed: {listing})", key=where
            )
        if len(candidates) > 1:
            both = " and ".join(c.qualified_name for c in candidates)
            raise RecipeError(
                f"{kind} '{bare}' is provided by {both}; pick one as 'provider:{bare}'",
                key=where,
            )
        return candidates[0]


def _describe_input(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (dict, list)):
        return type(value).__name__
    return repr(value)


_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _error_line(err: Mapping[str, Any], model: type[BaseModel] | None) -> tuple[str, str]:
    """(dotted key, message) for one pydantic error."""
    loc = [str(p) for p in err.get("loc", ()) if not str(p).startswith("function-")]
    etype = err.get("type", "")
    value = err.get("input")
    if etype == "extra_forbidden":
        unknown = loc[-1] if loc else "?"
        known: list[str] = []
        if model is not None and len(loc) == 1:
            known = list(model.model_fields)
        return ".".join(loc[:-1]), f"unknown field '{unknown}'{did_you_mean(unknown, known)}"
    if etype == "missing":
        return ".".join(loc), "required field is missing"
    if etype in _EXPECTED:
        return ".".join(loc), f"expected {_EXPECTED[etype]}, got {_describe_input(value)}"
    if etype in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return ".".join(loc), f"expected {expected}, got {_describe_input(value)}"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    suffix = f", got {_describe_input(value)}" if not isinstance(value, (dict, list)) else ""
    return ".".join(loc), f"{msg[0].lower()}{msg[1:]}{suffix}" if msg else msg


def validation_error(exc: ValidationError, model: type[BaseModel] | None, prefix: str) -> RecipeError:
    """Turn pydantic's first error into a one-line :class:`RecipeError` at ``prefix.key``."""
    key, message = _error_line(exc.errors()[0], model)
    return RecipeError(message, key=".".join(p for p in (prefix, key) if p))


def nested_kinds(config: type[BaseModel]) -> dict[str, str]:
    """Fields of ``config`` that hold component sections, mapped to their kind."""
    kinds: dict[str, str] = {}
    for fname, info in config.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and _KIND_KEY in extra:
            kinds[fname] = str(extra[_KIND_KEY])
    return kinds


def validate_section(
    registry: Registry, kind: str, section: Any, key: str
) -> tuple[Component, ComponentConfig]:
    """Validate a recipe section ``{name: ..., **fields}`` of ``kind`` found at ``key``.

    Nested component sections are validated too, so an error anywhere names its full key.
    """
    if isinstance(section, BaseModel):
        section = section.model_dump()
    if not isinstance(section, Mapping):
        raise RecipeError(f"expected a mapping with 'name:', got {_describe_input(section)}", key=key)
    name = section.get("name")
    if not isinstance(name, str) or not name:
        raise RecipeError(f"a {kind} section needs 'name:' (one of: {', '.join(registry.names(kind))})", key=key)
    component = registry.get(kind, name, key=f"{key}.name" if key else "name")
    fields = {k: v for k, v in section.items() if k != "name"}
    try:
        config = component.config.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc, component.config, key) from None
    for fname, sub_kind in nested_kinds(component.config).items():
        sub = getattr(config, fname)
        if sub is not None:
            validate_section(registry, sub_kind, sub, f"{key}.{fname}" if key else fname)
    return component, config


def build_from(registry: Registry, kind: str, section: Any, key: str = "", **context: Any) -> Any:
    """Validate ``section`` and call the component's factory with typed fields + context."""
    component, config = validate_section(registry, kind, section, key or kind)
    kwargs = {fname: getattr(config, fname) for fname in component.config.model_fields}
    kwargs.update(context)
    return component.factory(**kwargs)


# ---------------------------------------------------------------------------- process-wide API


def get_registry() -> Registry:
    """The process-wide registry with every installed plugin loaded."""
    from nestkit.plugins import get_registry as _get

    return _get()


def get(kind: str, name: str) -> Component:
    """The component ``name`` (or ``provider:name``) of ``kind``."""
    return get_registry().get(kind, name)


def components(kind: str | None = None) -> list[Component]:
    """Every registered component, optionally of one kind."""
    return [c for c in get_registry() if kind is None or c.kind == kind]
