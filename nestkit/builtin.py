"""nestkit's built-in plugin: registered through the ``nestkit`` entry point like any other.

Each module listed here exposes ``components() -> list[Component]``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from nestkit.hookspecs import hookimpl
from nestkit.registry import Component

BUILTIN_MODULES: tuple[str, ...] = (
    "nestkit.components.preprocessor",
    "nestkit.components.conformer",
    "nestkit.components.masking",
    "nestkit.components.quantizer",
    "nestkit.components.decoder",
    "nestkit.components.loss",
    "nestkit.models.nest",
    "nestkit.components.augmentors",
    "nestkit.components.optim",
)


@hookimpl
def nestkit_register_components(register: Callable[[Component], None]) -> None:
    for module_name in BUILTIN_MODULES:
        for component in importlib.import_module(module_name).components():
            register(component)
