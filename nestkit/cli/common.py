"""Helpers shared by the CLI verbs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nestkit.registry import Registry


def loaded_registry() -> Registry:
    """The registry, with one warning line per broken plugin (printed once)."""
    from nestkit.plugins import get_registry, warn_failures

    registry = get_registry()
    warn_failures(registry)
    return registry
