"""Which section of a recipe mapping a dotted path is, and which component it names.

A recipe's top is fixed (``model`` with its datasets and ``optim``; ``trainer``; ``exp_manager``);
below it the registry types it: a component's config says which of its fields hold other
components' sections (:func:`nestkit.registry.section_field`). Knowing the component at a path
lets an override switch a section to another component, keeping only the keys the new one
accepts, and lets ``${a.b}`` read the default of a key the recipe does not write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from nestkit.data.config import DatasetConfig
from nestkit.errors import RecipeError
from nestkit.registry import Registry, nested_kinds
from nestkit.train.config import ExpManagerConfig, TrainerConfig

MODEL_DATA_KEYS = ("train_ds", "validation_ds")
DEFAULT_MODEL = "nest"
_FIXED: dict[str, type[BaseModel]] = {"trainer": TrainerConfig, "exp_manager": ExpManagerConfig}
# Component sections a recipe nests where the component's config has no field for them.
_EXTRA_SECTIONS: dict[str, dict[str, str]] = {"model": {"optim": "optimizer"}, "optimizer": {"sched": "scheduler"}}


@dataclass(frozen=True)
class Section:
    """A section: its component kind (None for a fixed one such as ``trainer``) and the config its
    keys are validated against (None when it names no known component)."""

    kind: str | None
    config: type[BaseModel] | None


def _named(kind: str, name: Any, registry: Registry) -> Section:
    try:
        return Section(kind, registry.get(kind, name).config if isinstance(name, str) else None)
    except RecipeError:
        return Section(kind, None)


def _child(parent: Section, part: str, node: Any, registry: Registry) -> Section | None:
    if parent.kind == "model" and part in MODEL_DATA_KEYS:
        return Section(None, DatasetConfig)
    kind = _EXTRA_SECTIONS.get(parent.kind or "", {}).get(part)
    if kind is None and parent.config is not None:
        kind = nested_kinds(parent.config).get(part)
    if kind is not None:
        return _named(kind, node.get("name") if isinstance(node, Mapping) else None, registry)
    info = parent.config.model_fields.get(part) if parent.config is not None else None
    annotation = info.annotation if info is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return Section(None, annotation)
    return None


def section_at(data: Mapping[str, Any], path: Sequence[str], registry: Registry) -> Section | None:
    """The section at ``path`` (``["model", "encoder"]``) of a recipe mapping; None when the path
    is no section."""
    if not path:
        return None
    head, rest = path[0], path[1:]
    node = data.get(head)
    if head in _FIXED:
        section: Section | None = Section(None, _FIXED[head])
    elif head == "model":
        section = _named("model", node.get("name", DEFAULT_MODEL) if isinstance(node, Mapping) else DEFAULT_MODEL, registry)
    else:
        return None
    for part in rest:
        if section is None:
            return None
        node = node.get(part) if isinstance(node, Mapping) else None
        section = _child(section, part, node, registry)
    return section


def switch_component(section: dict[str, Any], kind: str, name: str, registry: Registry) -> list[str]:
    """Make ``section`` (of ``kind``) a section of component ``name``: drop the keys that component
    does not accept and return them (none when ``name`` is unknown: validation reports that)."""
    target = _named(kind, name, registry)
    if target.config is None:
        return []
    keep = {"name", *target.config.model_fields, *_EXTRA_SECTIONS.get(kind, {}), *(MODEL_DATA_KEYS if kind == "model" else ())}
    dropped = [key for key in section if key not in keep]
    for key in dropped:
        del section[key]
    return [str(key) for key in dropped]


def field_default(data: Mapping[str, Any], path: Sequence[str], registry: Registry) -> tuple[bool, Any]:
    """``(True, default)`` when the key at ``path`` is a field with a default of its section's
    config (mappings as plain dicts), else ``(False, None)``."""
    if len(path) == 1 and path[0] in _FIXED:  # a fixed section the recipe leaves out: all its defaults
        return True, {}
    section = section_at(data, path[:-1], registry)
    info = section.config.model_fields.get(path[-1]) if section is not None and section.config is not None else None
    if info is None or info.is_required():
        return False, None
    value = info.get_default(call_default_factory=True)
    return True, value.model_dump() if isinstance(value, BaseModel) else value
