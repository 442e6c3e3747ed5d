"""`nestkit check-plugin DIST...`: the conformance checks on every component a distribution registers."""

from __future__ import annotations

import re

import typer

from nestkit.cli.common import loaded_registry
from nestkit.errors import NestkitError, did_you_mean


def _canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503: case and -_. runs do not matter)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_plugins() -> dict[str, str]:
    """The distributions with a ``nestkit`` entry point, canonical name -> name (nothing imported)."""
    from importlib.metadata import entry_points

    from nestkit.plugins import ENTRY_POINT_GROUP

    return {_canonical(ep.dist.metadata["Name"]): ep.dist.metadata["Name"] for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.dist}


def check_plugin(
    dists: list[str] = typer.Argument(..., help="Distribution(s): nestkit (the built-ins) or a plugin package, e.g. nestkit-augment."),
) -> None:
    """Build every component the distributions register and check each against the contract of
    its kind (nestkit.testing.check_component); print one row per component. Exit code 1 when a
    check fails.

    Examples:

        nestkit check-plugin nestkit-augment

        nestkit check-plugin nestkit nestkit-augment nestkit-bestrq-extras
    """
    installed = _installed_plugins()  # first without importing any plugin (fast), then what registered
    for dist in dists:
        if _canonical(dist) not in installed:
            raise NestkitError(f"unknown distribution '{dist}'{did_you_mean(dist, installed.values())} (installed nestkit "
                               f"plugins: {', '.join(sorted(installed.values()))})")
    from nestkit.plugins import DISABLE_VARIABLE, PluginRegistry

    registry = loaded_registry()
    providers = {_canonical(c.provider) for c in registry}
    failed = {_canonical(f.provider): f.error for f in registry.failures}
    disabled = registry.disabled if isinstance(registry, PluginRegistry) else {}
    for dist in dists:
        if _canonical(dist) not in providers:
            off = sorted(name for name, provider in disabled.items() if _canonical(provider) == _canonical(dist))
            if off:
                why = f": {DISABLE_VARIABLE} disables its plugin{'s' * (len(off) > 1)} {', '.join(map(repr, off))}"
            else:
                why = f": its plugin failed to load ({failed[_canonical(dist)]})" if _canonical(dist) in failed else ""
            raise NestkitError(f"distribution '{dist}' registers no component{why}")
    chosen = [c for c in registry if _canonical(c.provider) in {_canonical(d) for d in dists}]

    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from nestkit.testing import ComponentCheckError, check_component

    table = Table(title="nestkit check-plugin")
    for column in ("provider", "kind", "name", "result", "checks", "capabilities / failure"):
        table.add_column(column, overflow="fold")
    failures = 0
    for component in track(chosen, description=f"checking {len(chosen)} components", transient=True):
        try:
            report = check_component(component.kind, component.qualified_name, registry=registry)
        except ComponentCheckError as err:
            failures += 1
            table.add_row(component.provider, component.kind, component.name, "[red]FAILED[/red]", err.check, err.detail)
            continue
        skipped = f", {len(report.skipped)} skipped" if report.skipped else ""
        table.add_row(component.provider, component.kind, component.name, "[green]ok[/green]",
                      f"{len(report.passed)} passed{skipped}", ", ".join(report.capabilities) or "-")
    console = Console(width=160)
    console.print(table)
    console.print(f"{len(chosen)} components checked: {len(chosen) - failures} passed, {failures} failed")
    if failures:
        raise typer.Exit(1)
