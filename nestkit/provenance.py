"""Where a resolved recipe's values came from, so that each error names the file to fix, once.

A recipe extends others (``extends:``), takes command-line overrides and copies values with
``${dotted.key}``. An error found in the resolved mapping is the fault of whoever wrote its key:
the recipe itself or the command line (errors then name the recipe, as always), or one of the
files it extends. :func:`writer` finds that file; :func:`without_echoes` drops an error whose
value was only copied from a key that has its own error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nestkit.errors import RecipeError

REFERENCE = re.compile(r"\$\{([^}]+)\}")  # ${dotted.key}
_MAX_HOPS = 16  # references followed while looking for a writer (a cycle is interpolation's error)

Written = Sequence[tuple[str, Mapping[str, Any]]]  # each file of the extends chain, the recipe first


def _reference(node: Any) -> str | None:
    """The key ``node`` copies when it is one whole ``${...}``, else None."""
    whole = REFERENCE.fullmatch(node.strip()) if isinstance(node, str) else None
    return whole.group(1).strip() if whole else None


def writer(key: str, written: Written, overridden: set[str]) -> str:
    """The file of ``written`` that wrote ``key``; "" when that is the recipe itself, a command-line
    override (``overridden``: their dotted keys) or nobody, or when ``key`` is a whole section (a
    problem of several keys: the recipe's). A value copied by ``${...}`` is blamed on whoever wrote
    its source (on the reference's file when nobody did); a field nobody wrote, on whoever chose
    the component (its section's ``name``)."""
    return _writer(key.split("."), written, overridden, 0) or ""


def _chosen(parts: list[str], written: Written) -> dict[int, Any]:
    """{depth: the component name the highest file writes for the section ``parts[:depth]``}: a
    file below that names another component wrote nothing that still counts in that section."""
    chosen: dict[int, Any] = {}
    for _, data in written:
        node: Any = data
        for depth, part in enumerate(parts):
            if not isinstance(node, Mapping):
                break
            if depth and "name" in node:  # the top level's name is the recipe's, not a component's
                chosen.setdefault(depth, node["name"])
            if part not in node:
                break
            node = node[part]
    return chosen


def _writer(parts: list[str], written: Written, overridden: set[str], hops: int) -> str | None:
    """:func:`writer`, with None for nobody."""
    key = ".".join(parts)
    if any(".".join(parts[:i]) in overridden for i in range(1, len(parts) + 1)):
        return ""
    chosen = _chosen(parts, written)

    def copy_of(source: str, rest: list[str], file: str) -> str | None:
        found = _writer([*source.split("."), *rest], written, overridden, hops + 1) if hops < _MAX_HOPS else None
        return found if found is not None else file

    for n, (file, data) in enumerate(written):
        mine = file if n else ""
        node: Any = data
        for i, part in enumerate(parts):
            if i and isinstance(node, Mapping) and "name" in node and node["name"] != chosen.get(i, node["name"]):
                break  # a section of another component, replaced by a file above
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, (Mapping, list)):
                break  # this file does not write the key: a file it extends may
            else:  # this file replaced the section above the key by one value: files below do not count
                source = _reference(node)
                return copy_of(source, parts[i:], mine) if source is not None else mine
        else:
            if isinstance(node, Mapping) or any(k.startswith(key + ".") for k in overridden):
                return ""
            source = _reference(node)
            return copy_of(source, [], mine) if source is not None else mine
    if len(parts) > 1 and parts[-1] != "name":
        return _writer([*parts[:-1], "name"], written, overridden, hops + 1)
    return None


def without_echoes(problems: list[RecipeError], copied: Mapping[str, str]) -> list[RecipeError]:
    """``problems`` less those at a key whose value was copied (``copied``: {key: the key its whole
    ``${...}`` names}, sections included) from a key that has a problem of its own."""
    keys = {p.full_key for p in problems}

    def source(key: str) -> str:
        for _ in range(_MAX_HOPS):
            parts = key.split(".")
            prefix = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in copied), None)
            if prefix is None:
                break
            key = copied[prefix] + key[len(prefix):]
        return key

    return [p for p in problems if (origin := source(p.full_key)) == p.full_key or origin not in keys]
