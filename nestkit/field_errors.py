"""pydantic's validation errors as one line per problem, each naming its recipe key in full
(``model.encoder.n_heads: expected an integer, got 'eight'``). Depends on nothing in nestkit
but ``nestkit.errors``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from nestkit.errors import RecipeError, did_you_mean

def describe_input(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (dict, list)):
        return type(value).__name__
    if isinstance(value, bool) or value is None:
        return _as_yaml(repr(value))
    return repr(value)


def _as_yaml(text: str) -> str:
    """Python's True/False/None in a message as a recipe spells them (true/false/null)."""
    return re.sub(r"\b(True|False|None)\b", lambda m: {"True": "true", "False": "false", "None": "null"}[m.group(1)], text)


_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


_TYPE_TAGS = frozenset({"int", "float", "str", "bool", "none", "list", "dict", "tuple"})


def _is_union_branch(part: Any) -> bool:
    """Whether a pydantic ``loc`` element names a union member (``constrained-int``,
    ``literal['auto','cpu']``, ``int``) rather than a field or a list index."""
    return isinstance(part, str) and (not part.isidentifier() or part in _TYPE_TAGS)


def _error_line(err: Mapping[str, Any], model: type[BaseModel] | None) -> tuple[str, str] | tuple[str, str, str]:
    """(dotted key, message[, unknown field]) for one pydantic error."""
    loc = [str(p) for p in err.get("loc", ()) if not _is_union_branch(p)]
    etype = err.get("type", "")
    value = err.get("input")
    if etype == "extra_forbidden":
        unknown = loc[-1] if loc else "?"
        known: list[str] = []
        if model is not None and len(loc) == 1:
            known = list(model.model_fields)
        return ".".join(loc[:-1]), f"unknown field '{unknown}'{did_you_mean(unknown, known)}", unknown
    if etype == "missing":
        return ".".join(loc), "required field is missing"
    if etype in _EXPECTED:
        return ".".join(loc), f"expected {_EXPECTED[etype]}, got {describe_input(value)}"
    if etype in ("literal_error", "enum"):
        expected = _as_yaml(str(err.get("ctx", {}).get("expected", "")))
        return ".".join(loc), f"expected {expected}, got {describe_input(value)}"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    suffix = f", got {describe_input(value)}" if not isinstance(value, (dict, list)) else ""
    return ".".join(loc), f"{msg[0].lower()}{msg[1:]}{suffix}" if msg else msg


_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"),
           "less_than_equal": ("le", "<="), "less_than": ("lt", "<")}
_LIST_OF = {"str": "strings", "int": "integers", "float": "numbers"}


def _wanted(err: Mapping[str, Any]) -> str:
    """What one union member asked for, as a noun phrase ("a string", "a number >= 1")."""
    etype, ctx = err.get("type", ""), err.get("ctx", {})
    if etype in _EXPECTED:
        return _EXPECTED[etype]
    if etype in ("literal_error", "enum"):
        return _as_yaml(str(ctx.get("expected", "one of its values")))
    if etype in _BOUNDS:
        name, sign = _BOUNDS[etype]
        return f"a number {sign} {ctx.get(name)}"
    msg = str(err.get("msg", "a valid value")).removeprefix("Value error, ")
    return f"{msg[0].lower()}{msg[1:]}" if msg else "a valid value"


def _member_name(tag: str) -> str:
    """A union member's tag (``list[str]``, ``int``) as a noun phrase."""
    inner = tag[tag.find("[") + 1 : -1] if tag.startswith("list[") else ""
    if tag.startswith("list"):
        return f"a list of {_LIST_OF[inner]}" if inner in _LIST_OF else "a list"
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
            "dict": "a mapping", "none": "null"}.get(tag, tag)


def _union_line(errors: list[Mapping[str, Any]], depth: int) -> str:
    """One message for a value that matched no member of a union; ``depth`` is where the member's
    tag sits in each error's ``loc``."""
    members: dict[str, list[Mapping[str, Any]]] = {}
    for err in errors:
        members.setdefault(str(err["loc"][depth]), []).append(err)
    wants, got = [], ""
    for tag, errs in members.items():
        rest = [p for p in errs[0]["loc"][depth + 1 :] if not _is_union_branch(p)]
        if len(errs) == 1 and not rest:
            named = _member_name(tag)
            wants.append(named if errs[0].get("type") in _EXPECTED and named != tag else _wanted(errs[0]))
            if not isinstance(errs[0].get("input"), dict):
                got = f", got {describe_input(errs[0].get('input'))}"
        else:
            wants.append(_member_name(tag))
    return "expected " + " or ".join(dict.fromkeys(w.removeprefix("expected ") for w in wants)) + got


def one_line_errors(
    errors: list[Any], model: type[BaseModel] | None, prefix: str
) -> list[RecipeError]:
    """Each of pydantic's errors as a one-line :class:`RecipeError` at ``prefix.key``; the errors of
    one value against each member of a union (``devices: -1`` is neither a number >= 1 nor
    'auto') are one line."""
    lines: list[tuple[str, ...]] = []
    unions: dict[tuple[Any, ...], list[Any]] = {}
    for err in errors:
        loc = tuple(err.get("loc", ()))
        depth = next((i for i, part in enumerate(loc) if _is_union_branch(part)), None)
        if depth is None:
            lines.append(_error_line(err, model))
        else:
            unions.setdefault(loc[:depth], []).append(err)
    lines += [(".".join(str(p) for p in where), _union_line(errs, len(where))) for where, errs in unions.items()]
    return [RecipeError(message, key=".".join(p for p in (prefix, key) if p), field=field[0] if field else "")
            for key, message, *field in dict.fromkeys(lines)]
