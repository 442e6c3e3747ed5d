"""`nestkit validate RECIPE [OVERRIDES...]`: check a recipe fully before anything heavy runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from nestkit.cli.common import load_cli_recipe


def validate(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    overrides: list[str] | None = typer.Argument(None, help="dotted.key=value overrides."),
    params: bool = typer.Option(True, "--params/--no-params", help="Build the model and count its parameters."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the resolved recipe."),
    # Annotated, so a call from Python without it reads False (a typer.Option default is truthy)
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    """Validate a recipe, print it resolved, and count the model's parameters per module.

    Examples:

        nestkit validate recipes/nest_fast_conformer.yaml

        nestkit validate recipes/nest_demo.yaml model.encoder.n_layers=4 trainer.max_steps=100
    """
    from rich.console import Console
    from rich.syntax import Syntax

    if debug:
        os.environ["NESTKIT_DEBUG"] = "1"
    console = Console()
    resolved = load_cli_recipe(recipe, overrides or ())
    from nestkit.checks import recipe_warnings

    for line in recipe_warnings(resolved):
        typer.echo(f"warning: {recipe}: {line}", err=True)
    if not quiet:
        console.print(Syntax(resolved.to_yaml(), "yaml", theme="ansi_dark", background_color="default"))
    if params:
        from nestkit import build_model
        from nestkit.summary import parameter_table

        model = build_model(resolved)
        from nestkit.train.setup import check_block_options, encoder_name

        check_block_options(model, compile=resolved.trainer.compile, activation_checkpointing=resolved.trainer.activation_checkpointing,
                            encoder=encoder_name(resolved), source=resolved.source)
        console.print(parameter_table(model))
    console.print(f"[green]ok[/green] {recipe}")
