"""`nestkit list-components`: what is installed, grouped by kind, with its provider."""

from __future__ import annotations

import json

import typer

from nestkit.cli.common import loaded_registry


def list_components(
    kind: str | None = typer.Option(None, "--kind", "-k", help="Only this kind (encoder, loss, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List every registered component and every plugin that failed to load.

    Examples:

        nestkit list-components

        nestkit list-components --kind encoder --json
    """
    registry = loaded_registry()
    if kind is not None:
        registry.require_kind(kind)
    items = [c for c in registry if kind is None or c.kind == kind]
    if as_json:
        payload = {
            "components": [
                {"kind": c.kind, "name": c.name, "provider": c.provider, "version": c.version, "summary": c.summary}
                for c in items
            ],
            "failed_plugins": [
                {"plugin": f.plugin, "provider": f.provider, "error": f.error} for f in registry.failures
            ],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    from rich import box

    # Names are never cut (whatever the terminal width): only providers and summaries wrap.
    table = Table(title="nestkit components", show_lines=False, box=box.SIMPLE_HEAD)
    table.add_column("kind", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("provider", overflow="fold")
    table.add_column("summary", overflow="fold")
    for k in registry.kinds():
        rows = [c for c in items if c.kind == k]
        for i, c in enumerate(rows):
            table.add_row(k if i == 0 else "", c.name, f"{c.provider} {c.version}".strip(), c.summary)
        if rows:
            table.add_section()
    console = Console()
    console.print(table)
    for f in registry.failures:
        console.print(f"[red]failed[/red] plugin {f.plugin} ({f.provider}): {f.error}")
