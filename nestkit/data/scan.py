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
    groups: int = 0  # groups split (folders with --group-by-folder, else recordings)
    val_groups: int = 0
    grouped: bool = False  # split by folder

    @property
    def seconds(self) -> float:
        return sum(float(e["duration"]) for e in self.train + self.validation)  # type: ignore[arg-type]

    def split_note(self, val_fraction: float) -> str | None:
        """One line when the validation share is far from the one asked, else None.

        The split keeps groups whole and decides each by a hash (deterministic), so few or uneven
        groups can give 28% when 5% was asked; the user should hear it rather than find out later.
        """
        total = len(self.train) + len(self.validation)
        if val_fraction <= 0 or total == 0:
            return None
        n_val, expected = len(self.validation), val_fraction * total
        if n_val and self.train and abs(n_val - expected) <= max(0.5 * expected, 2.0):
            return None
        groups = f"{self.val_groups} of {self.groups} groups, " if self.grouped else ""
        why = ("groups are whole (a deeper --group-by-folder level gives smaller ones)" if self.grouped
               else "each recording is drawn by a hash, so few recordings give a rough share")
        return (f"val: {groups}{n_val} of {total} recordings ({n_val / total:.0%}), "
                f"asked {val_fraction:.0%}: {why}")


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
    result.groups, result.val_groups, result.grouped = len(groups), len(chosen), group_level is not None
    return result


def check_output(path: Path, option: str = "--out", split_of: Path | None = None) -> None:
    """Refuse, in one line and before any header is read, a manifest path that cannot be written:
    a folder, a path below a file, a folder not writable (read-only or no permission), or an
    existing audio file (never overwrite input data). ``split_of``: the --out whose validation
    split ``path`` is."""
    where = f"{option} {split_of}: its validation split {path}" if split_of else f"{option} {path}"
    if path.is_dir():
        hint = "" if split_of else f" (name a manifest file, e.g. {path / 'train.json'})"
        raise NestkitError(f"{where}: is a folder{hint}")
    if path.is_file() and header_duration(str(path))[0] is not None:
        raise NestkitError(f"{where}: is an audio file, not overwriting it (name a .json file)")
    for folder in (path.parent, *path.parent.parents):
        if folder.is_dir():
            if not os.access(folder, os.W_OK | os.X_OK):
                raise NestkitError(f"{where}: cannot write into {folder} (read-only or no permission)")
            return
        if folder.exists() or folder.is_symlink():
            raise NestkitError(f"{where}: {folder} is not a folder")


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, outermost first."""
    missing = [f for f in (folder, *folder.parents) if not f.is_dir()][::-1]
    created: list[Path] = []
    for f in missing:
        f.mkdir()
        created.append(f)
    return created


def write_manifests(files: Sequence[tuple[list[dict[str, object]], Path]]) -> None:
    """Write the manifests (train, and its validation split) all or none.

    Each is written to ``NAME.tmp`` first and renamed over its target only once all are written,
    so a failed write (full disk, read-only folder) leaves the previous files, no ``.tmp`` and no
    folder it created, and never a new train list beside an old validation list. One line on error.
    """
    created: list[Path] = []
    written: list[tuple[Path, Path]] = []
    path = Path()
    try:
        for entries, path in files:
            created += _make_folders(path.parent)
            tmp = path.with_name(path.name + ".tmp")
            written.append((tmp, path))
            tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
        for tmp, path in written:
            os.replace(tmp, path)
    except OSError as exc:
        for tmp, _ in written:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
        failed = f"{exc.filename}: " if exc.filename and str(exc.filename) != str(path) else ""
        raise NestkitError(f"{path}: cannot write the manifest ({failed}{exc.strerror or exc})") from None


def validation_path(out: Path) -> Path:
    """Where the validation manifest goes: beside ``out``, named ``<stem>_val<suffix>``."""
    return out.with_name(f"{out.stem}_val{out.suffix or '.json'}")
