"""The section a conformance check builds when its caller gives none.

First the component's own plugin is asked (its ``nestkit_check_section`` hook, see
:mod:`nestkit.hookspecs`); otherwise the component's defaults are used, with the small sizes of
:data:`TEST_SIZES` for the usual fields, so checks take a fraction of a second.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pluggy

from nestkit import hookspecs
from nestkit.plugins import ENTRY_POINT_GROUP
from nestkit.registry import Component

# Small sizes for fields of these names, wherever a config has them.
TEST_SIZES: dict[str, int] = {
    "feat_in": 16,
    "features": 16,
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 2,
    "num_classes": 16,
    "code_dim": 8,
    "subsampling_conv_channels": 8,
    "block_size": 8,
}


@functools.lru_cache(maxsize=1)
def _plugins_by_provider() -> dict[str, list[EntryPoint]]:
    """The installed entry points of the group, by distribution (scanning them is slow)."""
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.dist is not None:
            found.setdefault(ep.dist.metadata["Name"], []).append(ep)
    return found


def provider_section(component: Component, workdir: Path) -> dict[str, Any] | None:
    """What the plugin that registered ``component`` answers to ``nestkit_check_section``, or None."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for ep in _plugins_by_provider().get(component.provider, []):
        manager.register(ep.load(), name=ep.name)
    return manager.hook.nestkit_check_section(kind=component.kind, name=component.name, workdir=workdir)


def default_section(component: Component) -> dict[str, Any]:
    """The component's defaults with :data:`TEST_SIZES`; an error naming the required fields
    that have neither."""
    fields = component.config.model_fields
    unknown = [name for name, info in fields.items() if info.is_required() and name not in TEST_SIZES]
    if unknown:
        raise ValueError(f"required field{'s' * (len(unknown) > 1)} {', '.join(unknown)} without a test value: "
                         "pass config= to check_component, or answer nestkit_check_section in the plugin")
    return {"name": component.qualified_name, **{k: v for k, v in TEST_SIZES.items() if k in fields}}


def check_section(component: Component, workdir: Path) -> dict[str, Any]:
    """The section to check ``component`` with when the caller gives none."""
    section = provider_section(component, workdir)
    if section is None:
        return default_section(component)
    return {**section, "name": component.qualified_name}
