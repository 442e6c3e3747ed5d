"""The extension points of nestkit.

A plugin is a module (or object) exposed under the Python entry-point group ``nestkit``
that implements one or more of these hooks with ``@nestkit.hookimpl``. nestkit's own
components register through exactly the same hook (see ``nestkit/builtin.py``). This module
imports nothing of nestkit at run time (the registry's types only for type checkers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from nestkit.registry import Component

PROJECT = "nestkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def nestkit_register_components(register: Callable[[Component], None]) -> None:
    """Register components (encoders, losses, augmentors, ...) with nestkit.

    :param register: call it once per :class:`nestkit.registry.Component`; nestkit records
        the calling plugin's distribution as the component's provider and checks for
        duplicate kind+name pairs across providers.
    :returns: nothing; a returned value (a list of components, say) registers nothing, and
        nestkit prints a warning naming the plugin.

    Called once per process and plugin, the first time the registry is used. A hook that
    raises registers none of its components; the other plugins are not affected.
    """


@hookspec(firstresult=True)
def nestkit_check_section(kind: str, name: str, workdir: Path) -> dict[str, Any] | None:
    """A small section (``{"name": ..., **fields}``) that builds this plugin's component
    ``kind``/``name`` quickly, for ``nestkit check-plugin`` and ``nestkit.testing.check_component``
    when no config is given. Optional.

    :param workdir: an empty folder for files the section needs (e.g. a centroids file).
    :returns: the section, or None for the component's defaults with small sizes for the usual
        fields (``feat_in``, ``d_model``, ``num_classes``, ...: see ``nestkit.testing``). An
        exception, an answer that is not a mapping or not a valid section fails the component's
        ``build`` check with a line naming the plugin and this hook.
    """
