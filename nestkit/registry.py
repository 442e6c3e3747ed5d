"""The typed component registry: every buildable part of nestkit goes through it.

This module depends on nothing in nestkit but the error types and their wording (``nestkit.errors``,
``nestkit.plugin_errors``, ``nestkit.field_errors``). Filling a registry from the
installed plugins is :mod:`nestkit.plugins`' job, and whoever builds holds the registry it
validated with and passes it down: nothing here looks up a process-wide registry.

A component is a kind (``encoder``), a name (``fast_conformer``), a factory, a pydantic config
model and a one-line summary; the plugin that registered it is its provider. Building validates
a recipe section against the config model once and calls ``factory(config, **context)`` with
the typed config object plus any context (the parameters for an optimizer, ...). A component
whose config holds other components' sections (:func:`section_field`) also gets
``registry=``, the registry to build those sections with: ``registry.build(kind, section,
key=field_name)``; their errors then name the full key (``model.encoder.n_heads``).

Factories written for nestkit 0.1 took the config's fields as keyword arguments. They still
work: :meth:`Registry.add` recognises them (no positional parameter, or a parameter named after
a config field), calls them that way and warns once (``DeprecationWarning``).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nestkit.errors import RecipeError, combined, did_you_mean
from nestkit.field_errors import describe_input, one_line_errors
from nestkit.plugin_errors import BUILTIN_PROVIDER, raise_build_error

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

    The registry validates such a field recursively, so errors point at the nested key, and the
    component's factory receives ``registry=`` to build it.
    """
    desc = description or f"a {kind} section: `name:` plus that component's fields"
    if default is ...:
        return Field(..., description=desc, json_schema_extra={_KIND_KEY: kind})
    return Field(default=default, description=desc, json_schema_extra={_KIND_KEY: kind})


@dataclass(frozen=True)
class Component:
    """One registered component: ``factory(config, **context)`` builds it."""

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


def _takes_fields(factory: Callable[..., Any], config: type[BaseModel]) -> bool:
    """Whether ``factory`` follows nestkit 0.1's convention: the config's fields as keywords."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature: assume today's convention
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    by_name = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return not positional or bool(by_name & set(config.model_fields))


def _fields_as_keywords(factory: Callable[..., Any]) -> Callable[..., Any]:
    """Adapt a 0.1-style factory to ``factory(config, **context)``."""

    def call(config: BaseModel, registry: Registry | None = None, **context: Any) -> Any:
        return factory(**{name: getattr(config, name) for name in type(config).model_fields}, **context)

    return call


def nested_kinds(config: type[BaseModel]) -> dict[str, str]:
    """Fields of ``config`` that hold component sections, mapped to their kind."""
    kinds: dict[str, str] = {}
    for fname, info in config.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and _KIND_KEY in extra:
            kinds[fname] = str(extra[_KIND_KEY])
    return kinds


def _refuse_unusable(component: Any, provider: str) -> None:
    """Raise one line (naming ``provider``) for a component no recipe could ever use, so the plugin
    fails to load instead of registering it."""
    if not isinstance(component, Component):
        raise TypeError(f"register() expects nestkit.Component, got {type(component).__name__}")
    who = provider or component.provider or "?"
    if component.kind not in KINDS:
        raise ValueError(f"{who} registers {component.name!r} under unknown kind {component.kind!r}; kinds are {', '.join(KINDS)}")
    what = f"{who} registers {component.kind} {component.name!r}"
    if not isinstance(component.name, str) or not component.name.strip():
        raise ValueError(f"{what}: a component needs a non-empty name")
    if ":" in component.name:  # recipes read 'a:b' as provider 'a', name 'b'
        raise ValueError(f"{what}: component names cannot contain ':' (recipes write 'provider:name')")
    if not callable(component.factory):
        raise ValueError(f"{what}: factory must be callable (the class or function that builds it), got {component.factory!r}")
    config = component.config
    if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
        got = config.__name__ if isinstance(config, type) else repr(config)
        if isinstance(config, type) and issubclass(config, BaseModel):
            got += ", a plain pydantic BaseModel (it would ignore misspelt keys)"
        raise ValueError(f"{what}: config must subclass nestkit.ComponentConfig (a pydantic model), got {got}")


@dataclass
class Registry:
    """All components known to this process, keyed by kind and name."""

    _components: dict[tuple[str, str], list[Component]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    plugins: dict[str, str] = field(default_factory=dict)  # plugin name -> "dist version"

    def add(self, *components: Component, provider: str = "", version: str = "") -> None:
        """Register ``components`` from one provider: all of them, or none if one is invalid."""
        ready: list[Component] = []
        for component in components:
            _refuse_unusable(component, provider)
            component = replace(
                component, provider=component.provider or provider, version=component.version or version
            )
            same = self._components.get((component.kind, component.name), []) + [
                c for c in ready if (c.kind, c.name) == (component.kind, component.name)
            ]
            if any(c.provider == component.provider for c in same):
                raise ValueError(f"{component.provider} registers {component.kind} {component.name!r} twice")
            if _takes_fields(component.factory, component.config):
                warnings.warn(
                    f"{component.provider} {component.kind} {component.name!r}: a factory taking the config's "
                    "fields as keywords is deprecated; take the config object: factory(config, **context)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                component = replace(component, factory=_fields_as_keywords(component.factory))
            ready.append(component)
        for component in ready:
            self._components.setdefault((component.kind, component.name), []).append(component)

    def kinds(self) -> tuple[str, ...]:
        return KINDS

    def require_kind(self, kind: str) -> None:
        """Refuse a kind nestkit does not have (``encoders`` for ``encoder``) instead of finding nothing."""
        if kind not in KINDS:
            raise RecipeError(f"unknown kind '{kind}'{did_you_mean(kind, KINDS)} (kinds: {', '.join(KINDS)})")

    def __iter__(self) -> Iterator[Component]:
        for key in sorted(self._components):
            yield from self._components[key]

    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self._components if k == kind)

    def get(self, kind: str, name: str, key: str = "") -> Component:
        """Look up ``name`` (or ``provider:name``) of ``kind``; errors name the recipe key."""
        self.require_kind(kind)
        where = key or kind
        provider, _, bare = name.rpartition(":")
        candidates = self._components.get((kind, bare), [])
        if provider:
            candidates = [c for c in candidates if c.provider == provider]
        if not candidates:
            installed = self.names(kind)
            hint = did_you_mean(bare, installed)
            listing = ", ".join(installed) if installed else "none"
            broken = "".join(f"; plugin {f.plugin} ({f.provider}) failed to load: {f.error}" for f in self.failures[:2])
            raise RecipeError(f"unknown {kind} '{name}'{hint} (installed: {listing}){broken}", key=where)
        if len(candidates) > 1:
            if any(c.provider == BUILTIN_PROVIDER for c in candidates):  # a plugin's clash never breaks recipes
                return next(c for c in candidates if c.provider == BUILTIN_PROVIDER)
            both = " and ".join(c.qualified_name for c in candidates)
            raise RecipeError(f"{kind} '{bare}' is provided by {both}; pick one as 'provider:{bare}'", key=where)
        return candidates[0]

    def check(
        self, kind: str, section: Any, key: str, problems: list[RecipeError], nested: bool = True
    ) -> tuple[Component, ComponentConfig] | None:
        """Validate a recipe section ``{name: ..., **fields}`` of ``kind`` found at ``key`` (and,
        when ``nested``, the component sections it holds): the component and its typed config, or
        None; every problem found is appended to ``problems`` as one line naming its full key."""
        if isinstance(section, BaseModel):
            section = section.model_dump()
        if not isinstance(section, Mapping):
            problems.append(RecipeError(f"expected a mapping with 'name:', got {describe_input(section)}", key=key))
            return None
        name = section.get("name")
        if not isinstance(name, str) or not name:
            problems.append(RecipeError(f"a {kind} section needs 'name:' (one of: {', '.join(self.names(kind))})", key=key))
            return None
        try:
            component = self.get(kind, name, key=f"{key}.name" if key else "name")
        except RecipeError as err:
            problems.append(err)
            return None
        fields = {k: v for k, v in section.items() if k != "name"}
        whole: list[RecipeError] = []
        config, bad_fields = validate_fields(component.config, fields, key, problems, whole, registry=self)
        inner: list[RecipeError] = []
        if nested:
            self.check_sections(component.config, fields, bad_fields, key, inner)
        # a cross-field check judged the raw nested sections: with one of them wrong, it says nothing new
        problems.extend(inner or whole)
        return (component, config) if config is not None else None

    def check_sections(
        self, config: type[BaseModel], fields: Mapping[str, Any], skip: set[str], key: str, problems: list[RecipeError]
    ) -> None:
        """Validate the component sections that ``fields`` of ``config`` hold, except the fields in
        ``skip`` (already reported); problems are appended."""
        for fname, kind in nested_kinds(config).items():
            sub = fields.get(fname)
            if sub is not None and fname not in skip:
                self.check(kind, sub, f"{key}.{fname}" if key else fname, problems)

    def build(self, kind: str, section: Any, key: str = "", **context: Any) -> Any:
        """Validate ``section`` (once, this level only: the factory builds and so validates the
        sections it holds) and build it with ``context``."""
        problems: list[RecipeError] = []
        checked = self.check(kind, section, key or kind, problems, nested=False)
        if problems:
            raise combined(problems)
        assert checked is not None
        return self.make(*checked, key=key or kind, **context)

    def make(self, component: Component, config: ComponentConfig, key: str = "", **context: Any) -> Any:
        """Call ``component``'s factory with an already validated ``config`` (from the section at
        ``key``); errors of the sections it builds are reported under ``key``, and what its own
        code raises as one line naming it (:mod:`nestkit.plugin_errors`)."""
        nested = bool(nested_kinds(component.config))
        if nested:
            context.setdefault("registry", self)
        try:
            return component.factory(config, **context)
        except RecipeError as err:
            raise (err.under(key) if nested else err) from err.__cause__
        except Exception as exc:
            raise_build_error(component, key, exc)
            raise


def validate_fields(
    model: type[BaseModel], fields: Mapping[str, Any], key: str, problems: list[RecipeError],
    whole: list[RecipeError] | None = None, registry: Registry | None = None,
) -> tuple[Any, set[str]]:
    """``model`` validated from ``fields`` (None if invalid) and the fields with problems; each
    problem is appended to ``problems`` as one line at ``key.field``, those of the checks across
    fields to ``whole`` when it is given. A check across fields finds ``registry`` in pydantic's
    validation context (``info.context["registry"]``): the components its sections name."""
    try:
        return model.model_validate(fields, context={"registry": registry} if registry is not None else None), set()
    except ValidationError as exc:
        errors = exc.errors()
        across = [err for err in errors if not err.get("loc")]
        problems.extend(one_line_errors([err for err in errors if err.get("loc")], model, key))
        (problems if whole is None else whole).extend(one_line_errors(across, model, key))
        return None, {str(err["loc"][0]) for err in errors if err.get("loc")}
