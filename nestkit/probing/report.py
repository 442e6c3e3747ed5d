"""How a probe's results are shown: a rich table, ``probe.json`` and ``probe.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

PLOT_EXTRA = "pip install 'nestkit[probe]'"


def _cell(entry: dict[str, Any] | None) -> str:
    return "" if entry is None else f"{entry['accuracy']:.3f} ± {entry['accuracy_std']:.3f}"


def results_table(result: dict[str, Any]) -> Table:
    """Layer x (pretrained, random init), plus a log-mel row: mean accuracy ± std over folds."""
    scoring = "train/test split" if result["folds"] == 1 else f"{result['folds']}-fold cross-validation"
    table = Table(title=f"probe '{result['label']}': {result['classes']} classes, {result['items']} items, {scoring}")
    table.add_column("layer", justify="right")
    table.add_column("pretrained", justify="right")
    table.add_column("random init", justify="right")
    by_key = {(r["features"], r["layer"]): r for r in result["results"]}
    for layer in sorted({r["layer"] for r in result["results"] if r["layer"] is not None}):
        table.add_row(str(layer), _cell(by_key.get(("pretrained", layer))), _cell(by_key.get(("random_init", layer))))
    table.add_row("log-mel", _cell(by_key.get(("log_mel", None))), "")
    return table


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")


def write_plot(result: dict[str, Any], path: Path) -> str | None:
    """Accuracy by layer (pretrained, random init; log-mel as a band). None when written, else
    why not (matplotlib is the optional extra ``nestkit[probe]``)."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    except ImportError:
        return f"probe.png not written: matplotlib is not installed ({PLOT_EXTRA})"
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    for features, style in (("pretrained", "o-"), ("random_init", "s--")):
        rows = [r for r in result["results"] if r["features"] == features]
        ax.errorbar([r["layer"] for r in rows], [r["accuracy"] for r in rows], yerr=[r["accuracy_std"] for r in rows],
                    fmt=style, capsize=3, label=features.replace("_", " "))
    for r in (r for r in result["results"] if r["features"] == "log_mel"):
        ax.axhline(r["accuracy"], color="gray", linestyle=":", label="log-mel")
        ax.axhspan(r["accuracy"] - r["accuracy_std"], r["accuracy"] + r["accuracy_std"], color="gray", alpha=0.15)
    layers = sorted({r["layer"] for r in result["results"] if r["layer"] is not None})
    ax.set_xticks(layers)
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.set_title(f"probe '{result['label']}' ({result['classes']} classes, {result['items']} items)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return None
