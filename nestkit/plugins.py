"""Plugin loading: each entry point of the group ``nestkit`` is loaded and called under its own guard.

Plugins are registered with a pluggy ``PluginManager`` and their ``nestkit_register_components``
hook is called through it, one plugin at a time. One broken plugin never takes nestkit down:
its failure is recorded (``nestkit list-components`` shows it) and reported as one warning
line, it registers nothing (a hook that raises, or one invalid component, registers none of
the plugin's components), and every other plugin keeps working.

A plugin component named like a built-in one is reached as ``provider:name``: the bare name keeps
meaning the built-in, so shipped recipes never break (one warning line says so).

``NESTKIT_DISABLE_PLUGINS=name,name`` skips plugins by entry-point name;
``NESTKIT_TRACE_PLUGINS=1`` prints each hook call with its plugin and outcome to stderr.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from nestkit import hookspecs
from nestkit.plugin_errors import BUILTIN_PROVIDER
from nestkit.registry import Component, PluginFailure, Registry

ENTRY_POINT_GROUP = "nestkit"
HOOK = "nestkit_register_components"
_registry: Registry | None = None
_warned = False


class _Pending:
    """The ``register`` callable a plugin's hook receives: collects its components."""

    def __init__(self) -> None:
        self.components: list[Component] = []

    def __call__(self, component: Component) -> None:
        self.components.append(component)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _provider(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ep.name, ""
    return dist.metadata["Name"], dist.version


def _trace(manager: pluggy.PluginManager, providers: Mapping[str, str]) -> None:
    """Print each hook call with its plugin, and how it ended, on stderr."""
    started: list[float] = []

    def before(hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        started.append(time.perf_counter())
        for impl in impls:
            print(f"nestkit: {hook_name} -> plugin '{impl.plugin_name}' ({providers.get(impl.plugin_name, '?')})", file=sys.stderr)

    def after(outcome: pluggy.Result[Any], hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        ms = 1000 * (time.perf_counter() - started.pop())
        names = ", ".join(f"'{impl.plugin_name}'" for impl in impls)
        pending = kwargs.get("register")
        if outcome.exception is not None:
            result = f"raised {_one_line(outcome.exception)}"
        else:
            result = f"{len(pending.components)} components" if isinstance(pending, _Pending) else "ok"
        print(f"nestkit: {hook_name} <- plugin {names}: {result} ({ms:.1f} ms)", file=sys.stderr)

    manager.add_hookcall_monitoring(before, after)


def _register(manager: pluggy.PluginManager, ep: EntryPoint) -> list[Component]:
    """Load one plugin, register it with ``manager`` and call its hook; its components."""
    plugin: Any = ep.load()
    manager.register(plugin, name=ep.name)
    if not manager.get_hookcallers(plugin):
        unmarked = callable(getattr(plugin, HOOK, None))
        hint = f"; mark {HOOK} with @nestkit.hookimpl" if unmarked else f" ({HOOK})"
        raise TypeError(f"implements no nestkit hook{hint}")
    others = [p for _, p in manager.list_name_plugin() if p is not plugin]
    pending = _Pending()
    manager.subset_hook_caller(HOOK, remove_plugins=others)(register=pending)
    return pending.components


def load_registry(entry_points_: list[EntryPoint] | None = None) -> Registry:
    """Build a fresh registry from the installed plugins (or the given entry points)."""
    registry = Registry()
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    disabled = {n.strip() for n in os.environ.get("NESTKIT_DISABLE_PLUGINS", "").split(",") if n.strip()}
    eps = entry_points_ if entry_points_ is not None else list(entry_points(group=ENTRY_POINT_GROUP))
    providers: dict[str, str] = {}  # entry-point name -> "dist version"
    if os.environ.get("NESTKIT_TRACE_PLUGINS", "") not in ("", "0"):
        _trace(manager, providers)
    for ep in sorted(eps, key=lambda e: (e.name != "builtin", e.name)):
        provider, version = _provider(ep)
        if ep.name in disabled:
            continue
        if ep.name in providers:
            registry.failures.append(
                PluginFailure(ep.name, provider, f"entry point name '{ep.name}' is already used by {providers[ep.name]}; skipped")
            )
            continue
        providers[ep.name] = f"{provider} {version}".strip()
        try:
            registry.add(*_register(manager, ep), provider=provider, version=version)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break nestkit
            registry.failures.append(PluginFailure(ep.name, provider, _one_line(exc)))
            if manager.get_plugin(ep.name) is not None:
                manager.unregister(name=ep.name)
            continue
        registry.plugins[ep.name] = providers[ep.name]
    return registry


def get_registry() -> Registry:
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
    for c in shadowed(registry):
        print(
            f"warning: {c.provider} also registers {c.kind} '{c.name}': the bare name means nestkit's; "
            f"write '{c.qualified_name}' for {c.provider}'s",
            file=sys.stderr,
        )
