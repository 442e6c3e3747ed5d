"""`nestkit describe KIND NAME`: a component's fields with types, defaults and descriptions."""

from __future__ import annotations

import typer
from pydantic_core import PydanticUndefined

from nestkit.cli.common import loaded_registry
from nestkit.registry import Component


def _type_name(annotation: object) -> str:
    text = getattr(annotation, "__name__", None) if not hasattr(annotation, "__args__") else None
    return text or str(annotation).replace("typing.", "")


def describe(
    kind: str = typer.Argument(..., help="Component kind, e.g. encoder."),
    name: str = typer.Argument(..., help="Component name, e.g. fast_conformer (or provider:name)."),
) -> None:
    """Show a component's recipe fields.

    Example:

        nestkit describe encoder fast_conformer
    """
    registry = loaded_registry()
    component = registry.get(kind, name)  # an unknown kind is named first
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{kind} {component.name} — {component.summary}", caption=f"provider: {component.provider} {component.version}")
    for column in ("field", "type", "default", "description"):
        table.add_column(column, overflow="fold")
    for fname, info in component.config.model_fields.items():
        default = "(required)" if info.default is PydanticUndefined and info.default_factory is None else repr(
            info.get_default(call_default_factory=True)
        )
        table.add_row(fname, _type_name(info.annotation), default, info.description or "")
    console = Console(width=160)
    console.print(table)
    for line in _contract_lines(component):
        console.print(line, highlight=False)


def _contract_lines(component: Component) -> list[str]:
    """The kind's contract and, per optional capability, whether the component has it."""
    from nestkit.contracts import CAPABILITIES, KIND_CONTRACTS, declared_capabilities

    lines = [f"contract: nestkit.{KIND_CONTRACTS[component.kind].__name__} (see CONTRIBUTING.md, 'Component contracts')"]
    optional = [c for c in CAPABILITIES if c.kind == component.kind]
    if not optional:
        return lines
    declared = declared_capabilities(component)
    if declared is None:
        return [*lines, "capabilities: unknown (annotate the factory's return type with the class it builds)"]
    for capability in optional:
        mark = "yes" if declared[capability.name] else "no "
        lines.append(f"  {mark} {capability.name} ({', '.join(capability.members)}): for {capability.needed_by}")
    return [*lines[:1], "capabilities:", *lines[1:]]
