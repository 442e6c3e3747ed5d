"""NeMo JSON-lines manifests: one utterance per line, read into compact columns.

Each line is a JSON object with ``audio_filepath`` (or ``audio_filename``) and ``duration`` in
seconds, optionally ``offset``; other keys (``text``, ``speaker``...) are ignored unless named
in ``keep``. Relative paths resolve against the manifest's folder, so a manifest works from any
working directory. Malformed lines are skipped and counted with their line number instead of
failing a run. Lines are parsed a few MB at a time with orjson into the columns of
:mod:`nestkit.data.columns` (a million lines take a few dozen MB).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import add, itemgetter
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson

from nestkit.data.columns import KeptExtras, ManifestPaths, StringTable, dumps_extra, encoded, joined
from nestkit.data.manifest_line import BLANK, loads, to_seconds, why_unusable
from nestkit.errors import DataError

MAX_REPORTED_LINES = 5
READ_BLOCK = 1 << 20  # bytes read at a time: bounded transient memory for any manifest size
ALL_KEYS = "*"  # keep=ALL_KEYS keeps every extra key (what `nestkit shard` writes back)
_OWN_KEYS = ("audio_filepath", "audio_filename", "duration", "offset")


@dataclass
class ManifestReport:
    """What reading (and filtering) the manifests kept and dropped."""

    items: int = 0
    seconds: float = 0.0
    too_short: int = 0
    too_long: int = 0
    dropped_seconds: float = 0.0
    malformed: dict[str, int] = field(default_factory=dict)  # reason -> count
    malformed_lines: list[str] = field(default_factory=list)  # first few "FILE line N: why"

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
            text += f"; skipped malformed lines: {reasons} ({self.first_malformed()})"
        return text

    def first_malformed(self) -> str:
        """The first few malformed lines as ``file line N: why``, so the user can open and fix them."""
        more = sum(self.malformed.values()) - len(self.malformed_lines)
        return "; ".join(self.malformed_lines) + (f"; and {more} more" if more > 0 else "")


@dataclass
class Manifest:
    """Utterances as columns: paths (resolved on access), seconds, offsets, kept extra keys."""

    paths: ManifestPaths
    durations: np.ndarray  # float64 seconds
    offsets: np.ndarray  # float64 seconds
    extras: KeptExtras  # only the keys named in read_manifest(keep=...)
    report: ManifestReport
    files: list[str] = field(default_factory=list)  # the manifest files read

    def __len__(self) -> int:
        return len(self.durations)

    def column(self, key: str) -> list[object]:
        """Every item's value of a kept extra key (None where a line lacks it)."""
        return [self.extras[i].get(key) for i in range(len(self))]

    @property
    def nbytes(self) -> int:
        """Memory held by the columns."""
        return self.paths.nbytes + self.durations.nbytes + self.offsets.nbytes + self.extras.nbytes


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


class _Columns:
    """Accumulates the kept items of all manifest files, block by block."""

    def __init__(self, keep: Sequence[str] | str) -> None:
        self.keep_all = keep == ALL_KEYS
        self.keep: tuple[str, ...] = () if self.keep_all else ((keep,) if isinstance(keep, str) else tuple(keep))
        self.names: list[tuple[bytes, np.ndarray]] = []
        self.kept: list[tuple[bytes, np.ndarray]] = []
        self.folder_of: list[np.ndarray] = []
        self.durations: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []
        self.folders: dict[str, int] = {}  # resolved folder -> index
        self.base: str | None = None  # folder of the current manifest (None: paths as written)
        self.of_file: dict[str, int] = {}  # folder as written in the current manifest -> index

    @property
    def keeps(self) -> bool:
        return self.keep_all or bool(self.keep)

    def start_file(self, base: str | None) -> None:
        self.base, self.of_file = base, {}

    def folder_ids(self, written: list[str]) -> list[int]:
        """Index of each written folder, resolving each distinct one once."""
        for folder in set(written).difference(self.of_file):
            resolved = folder
            if self.base is not None:
                where = Path(folder) if os.path.isabs(folder) else Path(self.base, folder)
                resolved = os.path.join(str(where), "")  # with its trailing separator
            self.of_file[folder] = self.folders.setdefault(resolved, len(self.folders))
        return list(map(self.of_file.__getitem__, written))

    def extra_json(self, entry: dict[str, object]) -> bytes:
        if self.keep_all:
            return dumps_extra({k: v for k, v in entry.items() if k not in _OWN_KEYS})
        return dumps_extra({k: entry[k] for k in self.keep if k in entry})


_Parsed = tuple[list[str], np.ndarray, np.ndarray, list[dict[str, object]]]


def _fast_block(lines: list[bytes]) -> _Parsed | None:
    """The common case in bulk: every line a JSON object with a path, a positive duration and a
    valid (or no) offset. None as soon as any line is otherwise: the per-line path decides."""
    try:
        entries = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None
    if set(map(type, entries)) != {dict}:
        return None
    try:
        paths = list(map(itemgetter("audio_filepath"), entries))
        durations = list(map(itemgetter("duration"), entries))
    except KeyError:
        return None
    offsets = list(map(dict.get, entries, repeat("offset")))
    if set(map(type, paths)) != {str} or not all(paths) or not set(map(type, durations)) <= {float, int}:
        return None
    if not set(map(type, offsets)) <= {float, int, type(None)}:
        return None
    try:
        dur = np.asarray(durations, dtype=np.float64)
        off = np.asarray(offsets, dtype=np.float64)  # None -> nan
    except OverflowError:
        return None
    off[np.isnan(off)] = 0.0  # orjson never yields nan itself: these were absent or null
    if not (np.isfinite(dur).all() and (dur > 0).all() and np.isfinite(off).all() and (off >= 0).all()):
        return None
    return paths, dur, off, entries


def _slow_block(lines: list[bytes], first_number: int, file: Path, report: ManifestReport) -> _Parsed:
    """Line by line, counting each unusable line with its reason (the first few with their number)."""
    paths: list[str] = []
    durs: list[float] = []
    offs: list[float] = []
    entries: list[dict[str, object]] = []
    for number, line in enumerate(lines, start=first_number):
        if not line or line.isspace():
            continue
        entry = loads(line)
        if entry is BLANK:
            continue
        reason = "not_json"
        if type(entry) is dict:
            path = entry.get("audio_filepath")
            if path is None:
                path = entry.get("audio_filename")
            duration = to_seconds(entry.get("duration"))
            offset = to_seconds(entry.get("offset") or 0.0)
            if type(path) is not str or not path:
                reason = "no_audio_filepath"
            elif duration is None or duration <= 0:
                reason = "bad_duration"
            elif offset is None or offset < 0:
                reason = "bad_offset"
            else:
                paths.append(path)
                durs.append(duration)
                offs.append(offset)
                entries.append(entry)
                continue
        report.malformed[reason] = report.malformed.get(reason, 0) + 1
        if len(report.malformed_lines) < MAX_REPORTED_LINES:
            report.malformed_lines.append(f"{file} line {number}: {why_unusable(reason, entry)}")
    return paths, np.asarray(durs, dtype=np.float64), np.asarray(offs, dtype=np.float64), entries


def _split(paths: list[str]) -> tuple[list[str], list[str]]:
    """(folder part with its trailing separator, file name) of each path, exactly as written."""
    if os.sep == "/":  # maps over C functions, no Python frame per path: 30% faster than comprehensions
        parts = list(map(str.rpartition, paths, repeat("/")))
        return list(map(add, map(itemgetter(0), parts), map(itemgetter(1), parts))), list(map(itemgetter(2), parts))
    cuts = [max(p.rfind("/"), p.rfind(os.sep)) + 1 for p in paths]
    return [p[:k] for p, k in zip(paths, cuts)], [p[k:] for p, k in zip(paths, cuts)]


def _add_block(
    lines: list[bytes], first_number: int, file: Path, resolve: bool, cols: _Columns,
    report: ManifestReport, limits: tuple[float | None, float | None],
) -> int:
    """Parse one block of lines into ``cols``; returns how many lines were usable."""
    parsed = _fast_block(lines) or _slow_block(lines, first_number, file, report)
    paths, dur, off, entries = parsed
    if not len(dur):
        return 0
    lo, hi = limits
    short = dur < lo if lo is not None else np.zeros(len(dur), bool)
    long_ = (dur > hi) & ~short if hi is not None else np.zeros(len(dur), bool)
    keep = ~(short | long_)
    report.too_short += int(short.sum())
    report.too_long += int(long_.sum())
    report.dropped_seconds += float(dur[~keep].sum())
    if not keep.all():
        idx = np.flatnonzero(keep).tolist()
        paths, entries = [paths[i] for i in idx], [entries[i] for i in idx]
        dur, off = dur[keep], off[keep]
    if resolve and any(p.startswith("~") for p in paths):
        paths = [os.path.expanduser(p) if p.startswith("~") else p for p in paths]
    folders, names = _split(paths)
    cols.names.append(encoded(names))
    cols.folder_of.append(np.asarray(cols.folder_ids(folders), dtype=np.uint32))
    if cols.keeps:
        cols.kept.append(joined([cols.extra_json(e) for e in entries]))
    cols.durations.append(dur)
    cols.offsets.append(off)
    return len(parsed[1])


def _blocks(handle: BinaryIO) -> Iterator[list[bytes]]:
    """Lines of a binary file, a few MB at a time, split as text mode would (\\n, \\r\\n, \\r)."""
    carry = b""
    while True:
        block = handle.read(READ_BLOCK)
        if not block:
            break
        block = carry + block
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            carry = block
            continue
        carry = block[cut:]
        yield block[:cut].splitlines()
    if carry:
        yield carry.splitlines()


def read_manifest(
    manifests: str | Sequence[str] | Path,
    *,
    min_duration: float | None = None,
    max_duration: float | None = None,
    resolve_paths: bool = True,
    keep: Sequence[str] | str = (),
) -> Manifest:
    """Read and concatenate manifests, dropping lines outside [min_duration, max_duration].

    ``keep`` names extra keys to keep per item (``manifest.extras[i]``, ``manifest.column(key)``),
    e.g. ``keep=("speaker",)``; ``keep=ALL_KEYS`` keeps them all. Raises :class:`DataError`
    (one line, naming the file) for a missing or unreadable manifest and for a manifest with no
    usable line. ``resolve_paths=False`` keeps paths as written (tarred manifests name members
    of a tar file, not files).
    """
    report = ManifestReport()
    cols = _Columns(keep)
    files = split_paths(manifests)
    if not files:
        raise DataError("no manifest given")
    for file in files:
        try:
            handle = file.open("rb")
        except FileNotFoundError:
            raise DataError(f"{file}: no such manifest file") from None
        except OSError as exc:
            raise DataError(f"{file}: cannot read manifest: {exc.strerror}") from None
        cols.start_file(str(file.resolve().parent) if resolve_paths else None)
        usable, number = 0, 1
        with handle:
            try:
                for lines in _blocks(handle):
                    usable += _add_block(lines, number, file, resolve_paths, cols, report, (min_duration, max_duration))
                    number += len(lines)
            except OSError as exc:
                raise DataError(f"{file}: cannot read manifest: {exc.strerror or exc}") from None
        if usable == 0:
            raise DataError(f"{file}: manifest has no usable line (need audio_filepath and a positive duration)")
    durations = np.concatenate(cols.durations) if cols.durations else np.zeros(0)
    if not len(durations):
        raise DataError(
            f"{', '.join(map(str, files))}: no item left after min_duration={min_duration} / "
            f"max_duration={max_duration} filtering"
        )
    offsets = np.concatenate(cols.offsets)
    if not offsets.any():
        offsets = np.zeros(len(durations))  # untouched zero pages: no resident memory
    report.items, report.seconds = len(durations), float(durations.sum())
    kept = KeptExtras(StringTable.build(cols.kept) if cols.keeps else None, len(durations))
    folder_of = np.concatenate(cols.folder_of).astype(np.min_scalar_type(max(len(cols.folders) - 1, 0)))
    folders = StringTable.build([encoded(list(cols.folders))])
    paths = ManifestPaths(StringTable.build(cols.names), folder_of, folders)
    del cols
    _release_free_memory()
    return Manifest(paths, durations, offsets, kept, report, [str(f) for f in files])


def _release_free_memory() -> None:
    """Hand the parser's freed blocks back to the OS (glibc keeps them otherwise: +50 MB RSS for
    a million lines that nothing uses any more)."""
    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        pass


def first_existing(manifest: Manifest, sample: int = 32) -> int | None:
    """Index of an item whose audio file exists, or None when none does.

    Checks ``sample`` items spread over the manifest first, so a usable manifest costs a few
    ``stat`` calls; only a manifest whose sampled files are all missing is checked in full.
    """
    n = len(manifest)
    probe = np.unique(np.linspace(0, n - 1, num=min(sample, n)).astype(np.int64)).tolist()
    sampled = set(probe)
    for i in [*probe, *(i for i in range(n) if i not in sampled)]:
        if os.path.exists(manifest.paths[i]):
            return i
    return None
