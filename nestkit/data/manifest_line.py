"""One line of a NeMo manifest: parsed leniently, and why it is unusable in words a user can
act on (the file and line number are the caller's)."""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import orjson


def to_seconds(value: object) -> float | None:
    """A finite number of seconds, or None (also for integers too large for a float)."""
    if type(value) is float:  # the common case, first
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def loads(line: bytes) -> object:
    """orjson for speed; the standard library (on replaced bad bytes) where orjson is stricter.
    A line that neither parses is an :class:`Unparsed` carrying the standard library's words."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        text = line.decode("utf-8", errors="replace")
        if not text.strip():
            return BLANK
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:  # its words name the problem better than orjson's
            return Unparsed(f"{exc.msg} at column {exc.colno}")
        except RecursionError:
            return Unparsed("nested too deeply")


class Unparsed(NamedTuple):
    """A line that is not JSON, and why (for the first few reported lines)."""

    why: str


BLANK = object()


def shown(value: object) -> str:
    """A value as the manifest wrote it, cut short."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def why_unusable(reason: str, entry: object) -> str:
    """What is wrong with one unusable line, in words the user can act on."""
    if isinstance(entry, Unparsed):
        return f"not JSON ({entry.why})"
    if type(entry) is not dict:
        kinds = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false"}
        return f"not a JSON object ({kinds.get(type(entry), 'null')})"
    if reason == "no_audio_filepath":
        key = "audio_filename" if "audio_filepath" not in entry and "audio_filename" in entry else "audio_filepath"
        return f"no {key}" if entry.get(key) is None else f"{key} {shown(entry[key])} is not a path"
    key = "duration" if reason == "bad_duration" else "offset"
    if key not in entry:
        return f"no {key}"
    value = entry[key]
    if to_seconds(value) is None:
        return f"{key} {shown(value)} is not a number of seconds"
    return f"{key} {shown(value)} is {'not positive' if key == 'duration' else 'negative'}"
