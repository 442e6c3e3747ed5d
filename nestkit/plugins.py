"""Plugin loading: each entry point of the group ``nestkit`` is loaded and called under its own guard.

Plugins are registered with a pluggy ``PluginManager`` and their ``nestkit_register_components``
hook is called through it, one plugin at a time. One broken plugin never takes nestkit down:
its failure is recorded (``nestkit list-components`` shows it) and reported as one warning
line, it registers nothing (a hook that raises, or one invalid component, registers none of
the plugin's components), and every other plugin keeps working.

A plugin component named like a built-in one is reached as ``provider:name``: the bare name keeps
meaning the built-in, so shipped recipes never break (one warning line says so).

``NESTKIT_DISABLE_PLUGINS=name,name`` skips plugins by entry-point name (a name that matches no
installed plugin is a warning line: a typo would otherwise leave the plugin on silently);
``NESTKIT_TRACE_PLUGINS=1`` prints each hook call with its plugin and outcome to stderr, and each
plugin that is skipped or fails to load (an import error calls no hook).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from nestkit import hookspecs
from nestkit.errors import did_you_mean
from nestkit.plugin_errors import BUILTIN_PROVIDER
from nestkit.registry import Component, PluginFailure, Registry

ENTRY_POINT_GROUP = "nestkit"
HOOK = "nestkit_register_components"
DISABLE_VARIABLE = "NESTKIT_DISABLE_PLUGINS"
_registry: PluginRegistry | None = None
_warned = False


@dataclass
class PluginRegistry(Registry):
    """The registry of the installed plugins, with what loading them found besides failures."""

    warnings: list[str] = field(default_factory=list)  # lines for warn_failures, without "warning: "
    disabled: dict[str, str] = field(default_factory=dict)  # entry-point name -> distribution, skipped


class _Pending:
    """The ``register`` callable a plugin's hook receives: collects its components."""

    def __init__(self) -> None:
        self.components: list[Component] = []

    def __call__(self, component: Component) -> None:
        if not isinstance(component, Component):  # fail here, in the plugin's call, not later in the registry
            raise TypeError(f"register() expects nestkit.Component, got {type(component).__name__}")
        self.components.append(component)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _provider(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ep.name, ""
    return dist.metadata["Name"], dist.version


def tracing() -> bool:
    """Whether ``NESTKIT_TRACE_PLUGINS`` asks for trace lines."""
    return os.environ.get("NESTKIT_TRACE_PLUGINS", "") not in ("", "0")


def trace(line: str) -> None:
    """One trace line on stderr, when tracing."""
    if tracing():
        print(f"nestkit: {line}", file=sys.stderr)


def disabled_plugins() -> set[str]:
    """The entry-point names ``NESTKIT_DISABLE_PLUGINS`` lists."""
    return {n.strip() for n in os.environ.get(DISABLE_VARIABLE, "").split(",") if n.strip()}


def _answer(value: Any) -> str:
    """What a hook returned, in a few words, for trace lines."""
    if value is None:
        return "returned None"
    if isinstance(value, Mapping):
        return f"returned a section ({', '.join(map(str, value))})"
    return f"returned {type(value).__name__}"


def plugin_manager(providers: Mapping[str, str]) -> pluggy.PluginManager:
    """A plugin manager with nestkit's hooks; when tracing, each hook call is printed with its
    plugin (``providers``: entry-point name -> "dist version"), and how it ended, on stderr."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    if not tracing():
        return manager
    started: list[float] = []

    def before(hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        started.append(time.perf_counter())
        about = f": {kwargs['kind']} '{kwargs['name']}'" if "kind" in kwargs and "name" in kwargs else ""
        for impl in impls:
            print(f"nestkit: {hook_name} -> plugin '{impl.plugin_name}' ({providers.get(impl.plugin_name, '?')}){about}", file=sys.stderr)

    def after(outcome: pluggy.Result[Any], hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        ms = 1000 * (time.perf_counter() - started.pop())
        names = ", ".join(f"'{impl.plugin_name}'" for impl in impls)
        pending = kwargs.get("register")
        if outcome.exception is not None:
            result = f"raised {_one_line(outcome.exception)}"
        elif isinstance(pending, _Pending):
            result = f"{len(pending.components)} components"
            returned = [r for r in outcome.get_result() if r is not None]
            result += f", {_answer(returned[0])} (ignored)" if returned else ""
        else:
            result = _answer(outcome.get_result())
        print(f"nestkit: {hook_name} <- plugin {names}: {result} ({ms:.1f} ms)", file=sys.stderr)

    manager.add_hookcall_monitoring(before, after)
    return manager


def _register(manager: pluggy.PluginManager, ep: EntryPoint) -> tuple[list[Component], list[Any]]:
    """Load one plugin, register it with ``manager`` and call its hook; its components and what
    the hook returned (it should return nothing: components go through ``register``)."""
    plugin: Any = ep.load()
    manager.register(plugin, name=ep.name)
    if not manager.get_hookcallers(plugin):
        unmarked = callable(getattr(plugin, HOOK, None))
        hint = f"; mark {HOOK} with @nestkit.hookimpl" if unmarked else f" ({HOOK})"
        raise TypeError(f"implements no nestkit hook{hint}")
    others = [p for _, p in manager.list_name_plugin() if p is not plugin]
    pending = _Pending()
    returned = manager.subset_hook_caller(HOOK, remove_plugins=others)(register=pending)
    return pending.components, [r for r in returned if r is not None]


def _fail(registry: Registry, ep: EntryPoint, provider: str, label: str, error: str) -> None:
    registry.failures.append(PluginFailure(ep.name, provider, error))
    trace(f"plugin '{ep.name}' ({label}) failed to load: {error}")


def _normalised(distribution: str) -> str:
    """A distribution name as pip compares them (PEP 503: case, and runs of -_. alike)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _unknown_disabled(disabled: set[str], eps: list[EntryPoint]) -> list[str]:
    """A warning per name of ``NESTKIT_DISABLE_PLUGINS`` that is no entry point's."""
    names = sorted({ep.name for ep in eps})
    by_dist: dict[str, list[str]] = {}
    for ep in eps:
        by_dist.setdefault(_normalised(_provider(ep)[0]), []).append(ep.name)
    lines = []
    for name in sorted(disabled - set(names)):
        if _normalised(name) in by_dist:  # it takes entry-point names, not distributions
            hint = f"; distribution {name}'s plugins are {', '.join(sorted(by_dist[_normalised(name)]))}"
        else:
            hint = f"{did_you_mean(name, names)} (installed plugins: {', '.join(names) or 'none'})"
        lines.append(f"{DISABLE_VARIABLE} names '{name}', which is no installed plugin's entry-point name{hint}")
    return lines


def load_registry(entry_points_: list[EntryPoint] | None = None) -> PluginRegistry:
    """Build a fresh registry from the installed plugins (or the given entry points)."""
    registry = PluginRegistry()
    disabled = disabled_plugins()
    eps = entry_points_ if entry_points_ is not None else list(entry_points(group=ENTRY_POINT_GROUP))
    providers: dict[str, str] = {}  # entry-point name -> "dist version"
    manager = plugin_manager(providers)
    for ep in sorted(eps, key=lambda e: (e.name != "builtin", e.name)):
        provider, version = _provider(ep)
        label = f"{provider} {version}".strip()
        if ep.name in disabled:
            registry.disabled[ep.name] = provider
            trace(f"plugin '{ep.name}' ({label}) skipped: {DISABLE_VARIABLE} names it")
            continue
        if ep.name in providers:
            _fail(registry, ep, provider, label, f"entry point name '{ep.name}' is already used by {providers[ep.name]}; skipped")
            continue
        providers[ep.name] = label
        try:
            components, returned = _register(manager, ep)
            registry.add(*components, provider=provider, version=version)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break nestkit
            _fail(registry, ep, provider, label, _one_line(exc))
            if manager.get_plugin(ep.name) is not None:
                manager.unregister(name=ep.name)
            continue
        registry.plugins[ep.name] = providers[ep.name]
        if returned:  # often a list of components the author meant to register
            registry.warnings.append(
                f"plugin '{ep.name}' ({provider}): {HOOK} returned {type(returned[0]).__name__}, which nestkit ignores; "
                "pass each component to register(...)"
            )
    registry.warnings.extend(_unknown_disabled(disabled, eps))
    return registry


def get_registry() -> PluginRegistry:
    """The process-wide registry of the installed plugins, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = load_registry()
    return _registry


def shadowed(registry: Registry) -> list[Component]:
    """Plugin components named like a built-in one: their bare name means the built-in."""
    builtin = {(c.kind, c.name) for c in registry if c.provider == BUILTIN_PROVIDER}
    return [c for c in registry if c.provider != BUILTIN_PROVIDER and (c.kind, c.name) in builtin]


def warn_failures(registry: Registry) -> None:
    """Print one warning line per failed plugin and per plugin component that reuses a built-in's
    name, once per process (stderr)."""
    global _warned
    if _warned:
        return
    _warned = True
    for failure in registry.failures:
        print(
            f"warning: plugin '{failure.plugin}' ({failure.provider}) failed to load: {failure.error}",
            file=sys.stderr,
        )
    for line in registry.warnings if isinstance(registry, PluginRegistry) else []:
        print(f"warning: {line}", file=sys.stderr)
    for c in shadowed(registry):
        print(
            f"warning: {c.provider} also registers {c.kind} '{c.name}': the bare name means nestkit's; "
            f"write '{c.qualified_name}' for {c.provider}'s",
            file=sys.stderr,
        )
