"""`nestkit schema`: the JSON Schema of recipes for every installed component."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nestkit.cli.common import loaded_registry


def schema(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Write the recipe JSON Schema (point your YAML language server at it).

    Example:

        nestkit schema -o nestkit.schema.json
        # first line of a recipe:  # yaml-language-server: $schema=nestkit.schema.json
    """
    from nestkit.errors import NestkitError
    from nestkit.schema import recipe_schema

    text = json.dumps(recipe_schema(loaded_registry()), indent=1)
    if output is None:
        typer.echo(text)
        return
    try:
        output.write_text(text + "\n")
    except OSError as exc:
        raise NestkitError(f"{output}: cannot write schema: {exc.strerror}") from None
    typer.echo(f"wrote {output}")
