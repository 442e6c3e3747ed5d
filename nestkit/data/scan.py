"""Build a NeMo manifest from folders of audio (``nestkit manifest``).

Durations come from the file headers (soundfile's ``info``: nothing is decoded), read in
parallel processes. Files soundfile cannot read are skipped with a reason; symlinked folders
are followed once each, so a symlink loop ends. A validation split is decided by a hash of a
group key (the file, or a folder level such as the speaker's), so it is deterministic and one
recording or group never lands on both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from nestkit.errors import DataError, NestkitError


@dataclass(frozen=True)
class Found:
    """One audio file: where it is, which scanned root it is under, and its duration or why not."""

    path: str
    root: str
    duration: float | None
    reason: str = ""  # why it is skipped (when duration is None)


@dataclass
class ScanResult:
    train: list[dict[str, object]] = field(default_factory=list)
    validation: list[dict[str, object]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (reason, path)

    @property
    def seconds(self) -> float:
        return sum(float(e["duration"]) for e in self.train + self.validation)  # type: ignore[arg-type]


def audio_extensions() -> set[str]:
    """File extensions of the formats this libsndfile reads (mp3 only where it has it)."""
    names = {k.lower() for k in sf.available_formats()}
    ext = {f".{n}" for n in names}
    if "ogg" in names:
        ext |= {".oga", ".opus"}
    if "aiff" in names:
        ext.add(".aif")
    return ext


def walk(roots: Sequence[Path]) -> Iterator[tuple[str, str, bool]]:
    """(path, root, looks like audio) of every file below the roots, each real folder once."""
    extensions = audio_extensions()
    seen: set[tuple[int, int]] = set()
    for root in roots:
        for folder, dirs, files in os.walk(root, followlinks=True):
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:  # reached again through a symlink: a loop or a duplicate
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            dirs.sort()
            for name in sorted(files):
                yield os.path.join(folder, name), str(root), os.path.splitext(name)[1].lower() in extensions


def header_duration(path: str) -> tuple[float | None, str]:
    """Seconds from the header, or (None, reason)."""
    try:
        info = sf.info(path)
    except FileNotFoundError:
        return None, "broken_link"
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
        return None, "unreadable"
    if info.samplerate <= 0 or info.frames <= 0:
        return None, "empty"
    return info.frames / info.samplerate, ""


def _durations(paths: list[str]) -> list[tuple[float | None, str]]:
    return [header_duration(p) for p in paths]


def read_headers(candidates: list[tuple[str, str]], jobs: int, progress: Callable[[int], None]) -> list[Found]:
    """Durations of (path, root) candidates in ``jobs`` processes, in order."""
    chunk = 64
    chunks = [candidates[i : i + chunk] for i in range(0, len(candidates), chunk)]
    found: list[Found] = []
    if jobs <= 1 or len(chunks) <= 1:
        results: Iterator[list[tuple[float | None, str]]] = map(_durations, ([p for p, _ in c] for c in chunks))
        executor = None
    else:
        executor = ProcessPoolExecutor(max_workers=jobs)
        results = executor.map(_durations, [[p for p, _ in c] for c in chunks])
    try:
        for part, durations in zip(chunks, results):
            found.extend(Found(p, r, d, why) for (p, r), (d, why) in zip(part, durations))
            progress(len(part))
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return found


def folder_level(path: str, root: str, level: int, option: str) -> str:
    """The name of the folder ``level`` levels below ``root`` on the way to ``path`` (1: the first)."""
    parts = Path(os.path.relpath(path, root)).parts[:-1]
    if level > len(parts):
        raise NestkitError(f"{option} {level}: {path} is only {len(parts)} folder(s) below {root} (use a smaller level)")
    return parts[level - 1]


def in_validation(key: str, fraction: float) -> bool:
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def build_entries(
    found: list[Found], out: Path, *, min_duration: float | None, max_duration: float | None,
    val_fraction: float, group_level: int | None, label_level: int | None, label_key: str,
) -> ScanResult:
    """Manifest lines for the usable files, split by group, plus the skipped (reason, path)."""
    result = ScanResult()
    base = out.resolve().parent
    groups: dict[str, list[dict[str, object]]] = {}
    for f in found:
        if f.duration is None:
            result.skipped.append((f.reason, f.path))
            continue
        if min_duration is not None and f.duration < min_duration:
            result.skipped.append(("too_short", f.path))
            continue
        if max_duration is not None and f.duration > max_duration:
            result.skipped.append(("too_long", f.path))
            continue
        absolute = Path(os.path.abspath(f.path))
        try:
            written = absolute.relative_to(base).as_posix()
        except ValueError:
            written = str(absolute)
        entry: dict[str, object] = {"audio_filepath": written, "duration": round(f.duration, 6)}
        if label_level is not None:
            entry[label_key] = folder_level(f.path, f.root, label_level, "--label-from-folder")
        group = written if group_level is None else f.root + "\0" + folder_level(f.path, f.root, group_level, "--group-by-folder")
        groups.setdefault(group, []).append(entry)
    if not groups:
        raise DataError(f"no usable audio file found ({len(result.skipped)} skipped)")
    chosen = {g for g in groups if val_fraction > 0 and in_validation(g, val_fraction)}
    if val_fraction > 0 and len(groups) > 1:  # both sides non-empty, still deterministic
        if not chosen:
            chosen = {min(groups, key=lambda g: hashlib.sha1(g.encode("utf-8", "surrogatepass")).digest())}
        if chosen == set(groups):
            chosen.discard(max(groups, key=lambda g: hashlib.sha1(g.encode("utf-8", "surrogatepass")).digest()))
    for group in sorted(groups):
        (result.validation if group in chosen else result.train).extend(groups[group])
    return result


def write_manifest(entries: list[dict[str, object]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    os.replace(tmp, path)


def validation_path(out: Path) -> Path:
    """Where the validation manifest goes: beside ``out``, named ``<stem>_val<suffix>``."""
    return out.with_name(f"{out.stem}_val{out.suffix or '.json'}")
