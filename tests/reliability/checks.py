"""What every bad input must end in: a skipped item or nestkit's one-line error, never a
traceback, a hang or a crash. Each ``check_*`` returns a short outcome label and raises
:class:`Violation` (an AssertionError) when the contract is broken."""

from __future__ import annotations

import contextlib
import io
import math
import signal
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from nestkit.errors import NestkitError, RecipeErrors

from reliability.corrupt import AudioCase, manifest_lines, mutate_recipe


class Violation(AssertionError):
    """A bad input that was not handled as a skipped item or a one-line error."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`Violation` if the block runs longer than ``seconds`` (main thread only)."""

    def _expired(signum: int, frame: Any) -> None:
        raise Violation(f"hang: {what} still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _unexpected(exc: BaseException, what: str) -> Violation:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return Violation(f"{what}: {last}")


def one_line(err: NestkitError, what: str, mistakes: int = 1) -> str:
    """``err``'s text, checked: one line per problem (a recipe with several mistakes may report each
    on its own line, every line naming its file and key), never more lines than ``mistakes``."""
    text = str(err)
    lines = text.split("\n")
    if not text.strip() or "Traceback" in text or len(lines) > mistakes or any(not line.strip() for line in lines):
        raise Violation(f"{what}: error message is not one line per mistake ({mistakes}): {text!r}")
    if len(lines) > 1 and not (isinstance(err, RecipeErrors) and all(e.file and e.key for e in err.errors)):
        raise Violation(f"{what}: a line of a several-line error names no file or key: {text!r}")
    return text


# ---------------------------------------------------------------------------- audio


AUDIO_MODES = ("window", "stream", "whole")


def check_audio(case: AudioCase, folder: Path, mode: str, index: int = 0) -> str:
    """Decode ``case`` the way nestkit does: ``window`` = a file with a 1 s manifest duration
    (manifest datasets, noise), ``stream`` = bytes with a 1 s duration (tar shards), ``whole`` =
    a file with no duration (``nestkit extract`` when a manifest gives duration 0)."""
    from nestkit.data.audio import AudioReadError, read_audio

    path = folder / f"case{index}.{'wav' if index % 2 else 'flac'}"
    path.write_bytes(case.data)
    source: str | bytes = case.data if mode == "stream" else str(path)
    duration = None if mode == "whole" else 1.0
    what = f"read_audio({mode}) on {case.kind} ({case.note})"
    try:
        with time_limit(10, what):
            audio = read_audio(source, sample_rate=16000, duration=duration)
    except AudioReadError as err:
        if err.reason not in ("empty", "unreadable", "non_finite"):  # the file exists: never 'missing'
            raise Violation(f"{what}: wrong skip reason {err.reason!r} ({err.detail})") from None
        return f"skipped:{err.reason}"
    except Violation:
        raise
    except BaseException as exc:  # noqa: BLE001 - anything else is the bug we look for
        raise _unexpected(exc, what) from None
    if audio.dtype != torch.float32 or audio.dim() != 1 or not bool(torch.isfinite(audio).all()):
        raise Violation(f"{what}: decoded audio is not finite float32 (T,): {audio.dtype} {tuple(audio.shape)}")
    return "decoded"


# ---------------------------------------------------------------------------- manifests


ONE_LINE_ERROR = object()


def _guarded(what: str, seconds: float, call: Callable[[], Any], mistakes: int = 1) -> Any:
    """``call()``'s result, or ONE_LINE_ERROR when it ended in a one-line nestkit error;
    a hang, a crash or any other exception is a :class:`Violation`."""
    try:
        with time_limit(seconds, what):
            return call()
    except NestkitError as err:
        one_line(err, what, mistakes)
        return ONE_LINE_ERROR
    except Violation:
        raise
    except BaseException as exc:  # noqa: BLE001 - anything else is the bug we look for
        raise _unexpected(exc, what) from None


def check_manifest(seed: int, folder: Path, huge_ints: bool = True) -> str:
    """``read_manifest`` on generated lines: a Manifest of sane values, or a one-line DataError."""
    from nestkit.data.manifest import read_manifest

    data = manifest_lines(seed, huge_ints)
    path = folder / f"manifest{seed}.json"
    path.write_bytes(data)
    what = f"read_manifest(seed {seed}: {data[:300]!r})"
    manifest = _guarded(what, 10, lambda: read_manifest(str(path)))
    if manifest is ONE_LINE_ERROR:
        return "error"
    n = len(manifest)
    if not (n == len(manifest.durations) == len(manifest.offsets) == len(manifest.extras) == manifest.report.items):
        raise Violation(f"{what}: inconsistent column lengths")
    if not all(math.isfinite(d) and d > 0 for d in manifest.durations.tolist()):
        raise Violation(f"{what}: kept a non-positive or non-finite duration {manifest.durations.tolist()}")
    if not all(math.isfinite(o) and o >= 0 for o in manifest.offsets.tolist()):
        raise Violation(f"{what}: kept a negative or non-finite offset {manifest.offsets.tolist()}")
    if not all(isinstance(p, str) and p for p in manifest.paths):
        raise Violation(f"{what}: kept an empty path")
    lines = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")  # as the reader splits them
    nonblank = sum(1 for line in lines if line.strip())
    if n + sum(manifest.report.malformed.values()) != nonblank:
        raise Violation(f"{what}: {n} kept + {manifest.report.malformed} malformed != {nonblank} lines")
    return "read"


# ---------------------------------------------------------------------------- recipes


def check_recipe(base: dict[str, Any], seed: int, folder: Path) -> str:
    """``nestkit validate`` (the CLI function, in this process, building the model) on a mutated recipe."""
    from nestkit.cli import validate as validate_cli

    data, notes = mutate_recipe(base, seed)
    path = folder / f"recipe{seed}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    what = f"nestkit validate (seed {seed}: {'; '.join(notes)})"
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = _guarded(what, 60, lambda: validate_cli.validate(path, [], params=True, quiet=True),
                           mistakes=max(1, len(notes)))
    return "error" if outcome is ONE_LINE_ERROR else "valid"
