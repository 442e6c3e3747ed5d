"""The section a conformance check builds when its caller gives none.

First the component's own plugin is asked (its ``nestkit_check_section`` hook, see
:mod:`nestkit.hookspecs`); otherwise the component's defaults are used, with the small sizes of
:data:`TEST_SIZES` for the usual fields, so checks take a fraction of a second. What goes wrong
with a plugin's answer names the plugin and the hook: the author must know it is their hook, not
their component, that broke.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from nestkit.plugins import ENTRY_POINT_GROUP, plugin_manager
from nestkit.registry import Component

CHECK_HOOK = "nestkit_check_section"

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


class SectionHookError(Exception):
    """A plugin's ``nestkit_check_section`` raised, or answered something that is not a section."""


def provider_section(component: Component, workdir: Path) -> tuple[dict[str, Any] | None, str]:
    """What the plugin that registered ``component`` answers to ``nestkit_check_section`` (None
    when none of its entry points answers), and who answered: "plugin 'NAME' (DIST):
    nestkit_check_section", or "" for no answer."""
    eps = _plugins_by_provider().get(component.provider, [])
    manager = plugin_manager({ep.name: f"{ep.dist.metadata['Name']} {ep.dist.version}" if ep.dist else component.provider
                              for ep in eps})
    for ep in eps:
        manager.register(ep.load(), name=ep.name)
    for ep in eps:  # one plugin at a time, so what goes wrong names it
        if not any(impl.plugin_name == ep.name for impl in manager.hook.nestkit_check_section.get_hookimpls()):
            continue
        who = f"plugin '{ep.name}' ({component.provider}): {CHECK_HOOK}"
        others = [p for name, p in manager.list_name_plugin() if name != ep.name]
        try:
            answer = manager.subset_hook_caller(CHECK_HOOK, remove_plugins=others)(
                kind=component.kind, name=component.name, workdir=workdir)
        except Exception as exc:
            text = " ".join(str(exc).split())
            raise SectionHookError(f"{who} raised {type(exc).__name__}{': ' * bool(text)}{text}") from exc
        if answer is None:
            continue
        if not isinstance(answer, Mapping):
            raise SectionHookError(f"{who} returned {type(answer).__name__} ({answer!r:.40}), expected a mapping of the "
                                   f"section's fields, or None for the defaults")
        return dict(answer), who
    return None, ""


def default_section(component: Component) -> dict[str, Any]:
    """The component's defaults with :data:`TEST_SIZES`; an error naming the required fields
    that have neither."""
    fields = component.config.model_fields
    unknown = [name for name, info in fields.items() if info.is_required() and name not in TEST_SIZES]
    if unknown:
        raise ValueError(f"required field{'s' * (len(unknown) > 1)} {', '.join(unknown)} without a test value: "
                         "pass config= to check_component, or answer nestkit_check_section in the plugin")
    return {"name": component.qualified_name, **{k: v for k, v in TEST_SIZES.items() if k in fields}}


def check_section(component: Component, workdir: Path) -> tuple[dict[str, Any], str]:
    """The section to check ``component`` with when the caller gives none, and who answered it
    (as :func:`provider_section`; "" for the defaults)."""
    section, who = provider_section(component, workdir)
    if section is None:
        return default_section(component), ""
    return {**section, "name": component.qualified_name}, who
