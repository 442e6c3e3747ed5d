"""Helpers shared by the CLI verbs."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nestkit.errors import RecipeErrors

if TYPE_CHECKING:
    from nestkit.errors import NestkitError
    from nestkit.recipe import Recipe
    from nestkit.registry import Registry

MAX_ERROR_LINES = 20


def loaded_registry() -> Registry:
    """The registry, with one warning line per broken plugin (printed once)."""
    from nestkit.plugins import get_registry, warn_failures

    registry = get_registry()
    warn_failures(registry)
    return registry


def load_cli_recipe(path: Path, overrides: Sequence[str], quiet: bool = False) -> Recipe:
    """The recipe validated against the installed plugins; what its overrides changed beyond their
    keys is printed as ``note:`` lines (unless ``quiet``), also when the recipe is invalid."""
    from nestkit.recipe import load_recipe

    notes: list[str] = []
    try:
        return load_recipe(path, overrides, registry=loaded_registry(), notes=notes)
    finally:
        for line in [] if quiet else notes:
            print(f"note: {line}", file=sys.stderr)


def error_lines(err: NestkitError) -> list[str]:
    """``error: ...`` lines for a user error: one per problem, the first MAX_ERROR_LINES of them
    and then how many more there are."""
    problems = err.errors if isinstance(err, RecipeErrors) else [err]
    # one line each, even where a message quotes a library's multi-line text
    lines = ["error: " + re.sub(r"\s*\n\s*", " ", str(problem).strip()) for problem in problems[:MAX_ERROR_LINES]]
    if len(problems) > MAX_ERROR_LINES:
        lines.append(f"error: ... and {len(problems) - MAX_ERROR_LINES} more problems")
    return lines
