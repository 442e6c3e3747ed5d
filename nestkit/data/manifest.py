"""NeMo JSON-lines manifests: one utterance per line, read into columns.

Each line is a JSON object with ``audio_filepath`` (or ``audio_filename``) and ``duration`` in
seconds, optionally ``offset``; other keys (``text``, ``speaker``...) are ignored. Relative
paths resolve against the manifest's folder, so a manifest works from any working directory.
Malformed lines are skipped and counted with their line number instead of failing a run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nestkit.errors import DataError


@dataclass
class ManifestReport:
    """What reading (and filtering) the manifests kept and dropped."""

    items: int = 0
    seconds: float = 0.0
    too_short: int = 0
    too_long: int = 0
    dropped_seconds: float = 0.0
    malformed: dict[str, int] = field(default_factory=dict)  # reason -> count
    malformed_lines: list[str] = field(default_factory=list)  # first few "file:line: reason"

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    @property
    def dropped(self) -> int:
        return self.too_short + self.too_long + sum(self.malformed.values())

    def summary(self) -> str:
        """One line for the log."""
        text = f"{self.items} items, {self.hours:.2f} h kept"
        if self.too_short or self.too_long:
            text += (
                f"; dropped {self.too_short} too short + {self.too_long} too long"
                f" ({self.dropped_seconds / 3600.0:.2f} h)"
            )
        if self.malformed:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.malformed.items()))
            text += f"; skipped malformed lines: {reasons}"
        return text


@dataclass
class Manifest:
    """Utterances as columns (cheap for millions of lines): absolute paths, seconds, offsets."""

    paths: list[str]
    durations: np.ndarray  # float64 seconds
    offsets: np.ndarray  # float64 seconds
    extras: list[dict[str, object]]  # the other keys of each line (written back by write_shards)
    report: ManifestReport

    def __len__(self) -> int:
        return len(self.paths)


MAX_REPORTED_LINES = 5


def split_paths(manifests: str | Sequence[str] | Path) -> list[Path]:
    """A path, a comma-separated string of paths, or a list of them."""
    if isinstance(manifests, Path):
        return [manifests]
    if isinstance(manifests, str):
        return [Path(p.strip()) for p in manifests.split(",") if p.strip()]
    out: list[Path] = []
    for item in manifests:
        out.extend(split_paths(item))
    return out


def _seconds(value: object) -> float | None:
    """A finite number of seconds, or None (also for integers too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def _parse_line(text: str, folder: Path, resolve: bool) -> tuple[str, float, float, dict[str, object]] | str:
    """(path, duration, offset, extras) or the reason the line is unusable."""
    try:
        entry = json.loads(text)
    except json.JSONDecodeError:
        return "not_json"
    if not isinstance(entry, dict):
        return "not_json"
    path = entry.pop("audio_filepath", None)
    if path is None:
        path = entry.pop("audio_filename", None)
    if not isinstance(path, str) or not path:
        return "no_audio_filepath"
    duration = _seconds(entry.pop("duration", None))
    if duration is None or duration <= 0:
        return "bad_duration"
    offset = _seconds(entry.pop("offset", 0.0) or 0.0)
    if offset is None or offset < 0:
        return "bad_offset"
    if resolve:
        p = Path(path).expanduser()
        path = str(p if p.is_absolute() else folder / p)
    return path, duration, offset, entry


def read_manifest(
    manifests: str | Sequence[str] | Path,
    *,
    min_duration: float | None = None,
    max_duration: float | None = None,
    resolve_paths: bool = True,
) -> Manifest:
    """Read and concatenate manifests, dropping lines outside [min_duration, max_duration].

    Raises :class:`DataError` (one line, naming the file) for a missing or unreadable manifest
    and for a manifest with no usable line. ``resolve_paths=False`` keeps paths as written
    (tarred manifests name members of a tar file, not files).
    """
    report = ManifestReport()
    paths: list[str] = []
    durations: list[float] = []
    offsets: list[float] = []
    extras: list[dict[str, object]] = []
    files = split_paths(manifests)
    if not files:
        raise DataError("no manifest given")
    for file in files:
        try:
            handle = file.open(encoding="utf-8", errors="replace")  # bad bytes: a malformed line, not a crash
        except FileNotFoundError:
            raise DataError(f"{file}: no such manifest file") from None
        except OSError as exc:
            raise DataError(f"{file}: cannot read manifest: {exc.strerror}") from None
        folder = file.resolve().parent
        usable = 0
        with handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                parsed = _parse_line(text, folder, resolve_paths)
                if isinstance(parsed, str):
                    report.malformed[parsed] = report.malformed.get(parsed, 0) + 1
                    if len(report.malformed_lines) < MAX_REPORTED_LINES:
                        report.malformed_lines.append(f"{file}:{number}: {parsed.replace('_', ' ')}")
                    continue
                usable += 1
                path, duration, offset, extra = parsed
                if min_duration is not None and duration < min_duration:
                    report.too_short += 1
                    report.dropped_seconds += duration
                    continue
                if max_duration is not None and duration > max_duration:
                    report.too_long += 1
                    report.dropped_seconds += duration
                    continue
                paths.append(path)
                durations.append(duration)
                offsets.append(offset)
                extras.append(extra)
        if usable == 0:
            raise DataError(f"{file}: manifest has no usable line (need audio_filepath and a positive duration)")
    if not paths:
        raise DataError(
            f"{', '.join(map(str, files))}: no item left after min_duration={min_duration} / "
            f"max_duration={max_duration} filtering"
        )
    dur = np.asarray(durations, dtype=np.float64)
    report.items, report.seconds = len(paths), float(dur.sum())
    return Manifest(paths, dur, np.asarray(offsets, dtype=np.float64), extras, report)

