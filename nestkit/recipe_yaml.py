"""Reading a recipe's YAML: YAML 1.2 floats (``1e-3``, as NeMo reads them), never an object
constructed, and a syntax error as ``file:line:col: ...``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from nestkit.errors import RecipeError


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loader that also reads ``1e-3`` as a float (as YAML 1.2 and NeMo do)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (no object construction, ever)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping; syntax errors become ``file:line:col: ...``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError("no such recipe file", file=str(path)) from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe: {exc.strerror}", file=str(path)) from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise RecipeError(f"YAML syntax error: {problem}", file=where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe must be a mapping, got {type(data).__name__}", file=str(path))
    return data
