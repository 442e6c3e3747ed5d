"""Plugin discovery: every entry point of the group ``nestkit`` is loaded under its own guard.

One broken plugin never takes nestkit down: its failure is recorded (``nestkit
list-components`` shows it) and reported as a single warning line, and every other plugin
keeps working. ``NESTKIT_DISABLE_PLUGINS=name,name`` skips plugins by entry-point name.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from nestkit import hookspecs
from nestkit.registry import Component, PluginFailure, Registry

ENTRY_POINT_GROUP = "nestkit"
_registry: Registry | None = None
_warned = False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _provider(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ep.name, ""
    return dist.metadata["Name"], dist.version


def load_registry(entry_points_: list[EntryPoint] | None = None) -> Registry:
    """Build a fresh registry from the installed plugins (or the given entry points)."""
    registry = Registry()
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    disabled = {n.strip() for n in os.environ.get("NESTKIT_DISABLE_PLUGINS", "").split(",") if n.strip()}
    eps = entry_points_ if entry_points_ is not None else list(entry_points(group=ENTRY_POINT_GROUP))
    seen: dict[str, str] = {}  # entry-point name -> provider
    for ep in sorted(eps, key=lambda e: (e.name != "builtin", e.name)):
        provider, version = _provider(ep)
        if ep.name in disabled:
            continue
        if ep.name in seen:
            registry.failures.append(
                PluginFailure(ep.name, provider, f"entry point name '{ep.name}' is already used by {seen[ep.name]}; skipped")
            )
            continue
        seen[ep.name] = provider
        try:
            plugin: Any = ep.load()
            manager.register(plugin, name=ep.name)
            hook = getattr(plugin, "nestkit_register_components", None)
            if hook is None:
                raise TypeError("implements no nestkit hook (nestkit_register_components)")
            pending: list[Component] = []
            hook(register=pending.append)
            for component in pending:
                registry.add(component, provider=provider, version=version)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break nestkit
            registry.failures.append(PluginFailure(ep.name, provider, _one_line(exc)))
            continue
        registry.plugins[ep.name] = f"{provider} {version}".strip()
    return registry


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = load_registry()
    return _registry


def warn_failures(registry: Registry) -> None:
    """Print one warning line per failed plugin, once per process (stderr)."""
    global _warned
    if _warned:
        return
    _warned = True
    for failure in registry.failures:
        print(
            f"warning: plugin '{failure.plugin}' ({failure.provider}) failed to load: {failure.error}",
            file=sys.stderr,
        )


def reset() -> None:
    """Forget the loaded registry (tests install and remove plugins)."""
    global _registry, _warned
    _registry, _warned = None, False
