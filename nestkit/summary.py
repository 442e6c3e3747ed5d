"""Parameter counts per top-level module, as `nestkit validate` and the trainer print them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from rich.table import Table


@dataclass(frozen=True)
class ModuleCount:
    parameters: int
    trainable: int
    buffer_elements: int


def count_parameters(model: torch.nn.Module) -> dict[str, ModuleCount]:
    """Counts for each direct child of ``model`` plus a ``total`` row."""
    counts: dict[str, ModuleCount] = {}
    for name, child in model.named_children():
        params = list(child.parameters())
        counts[name] = ModuleCount(
            parameters=sum(p.numel() for p in params),
            trainable=sum(p.numel() for p in params if p.requires_grad),
            buffer_elements=sum(b.numel() for b in child.buffers()),
        )
    params = list(model.parameters())
    counts["total"] = ModuleCount(
        parameters=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
        buffer_elements=sum(b.numel() for b in model.buffers()),
    )
    return counts


def parameter_table(model: torch.nn.Module) -> Table:
    from rich.table import Table

    table = Table(title="parameters")
    for column in ("module", "parameters", "trainable", "buffer elements"):
        table.add_column(column, justify="right" if column != "module" else "left")
    for name, c in count_parameters(model).items():
        table.add_row(name, f"{c.parameters:,}", f"{c.trainable:,}", f"{c.buffer_elements:,}")
    return table
