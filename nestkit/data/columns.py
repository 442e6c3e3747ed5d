"""Compact per-utterance columns for millions of manifest lines.

Strings live in one UTF-8 buffer with end offsets (:class:`StringTable`); paths are a table of
distinct folders plus each file's name and folder index (:class:`ManifestPaths`). These are
numpy arrays, never one Python object per utterance, so they take a few dozen bytes an item
and forked loader workers share their pages instead of copying them as reference counts change.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
import orjson


class StringTable(Sequence[str]):
    """Strings stored as one UTF-8 buffer plus end offsets."""

    def __init__(self, data: np.ndarray, ends: np.ndarray) -> None:
        self.data, self.ends = data, ends

    @classmethod
    def build(cls, chunks: Sequence[tuple[bytes, np.ndarray]]) -> StringTable:
        """From (joined bytes, byte length of each string) chunks, in order."""
        data = np.frombuffer(b"".join(c for c, _ in chunks), dtype=np.uint8)
        ends = np.cumsum(np.concatenate([n for _, n in chunks]) if chunks else np.zeros(0, np.int64), dtype=np.int64)
        return cls(data, ends.astype(np.uint32) if len(data) < 2**32 else ends)

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return self.raw(i).decode("utf-8", errors="surrogatepass")

    def raw(self, i: int) -> bytes:
        n = len(self.ends)
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        start = int(self.ends[i - 1]) if i else 0
        return self.data[start : int(self.ends[i])].tobytes()

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.ends.nbytes


def joined(parts: list[bytes]) -> tuple[bytes, np.ndarray]:
    """A :meth:`StringTable.build` chunk from encoded strings."""
    return b"".join(parts), np.fromiter(map(len, parts), np.int64, len(parts))


def encoded(strings: list[str]) -> tuple[bytes, np.ndarray]:
    """A :meth:`StringTable.build` chunk from strings (one encode when they are ASCII)."""
    text = "".join(strings)
    if text.isascii():
        return text.encode("ascii"), np.fromiter(map(len, strings), np.int64, len(strings))
    return joined([s.encode("utf-8", errors="surrogatepass") for s in strings])  # lone surrogates: as written


class ManifestPaths(Sequence[str]):
    """``folders[folder_of[i]] + names[i]``: each distinct (resolved) folder is stored once."""

    def __init__(self, names: StringTable, folder_of: np.ndarray, folders: StringTable) -> None:
        self.names, self.folder_of, self.folders = names, folder_of, folders

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return self.folders[int(self.folder_of[i])] + self.names[i]

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        return self.names.nbytes + self.folder_of.nbytes + self.folders.nbytes


class KeptExtras(Sequence[dict[str, object]]):
    """The kept extra keys of each line (``{}`` where none was kept), decoded on access."""

    def __init__(self, table: StringTable | None, n: int) -> None:
        self.table, self.n = table, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, object]:  # type: ignore[override]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        if self.table is None:
            return {}
        text = self.table.raw(i)
        try:
            return orjson.loads(text)  # type: ignore[no-any-return]
        except orjson.JSONDecodeError:  # written by the standard library (see dumps_extra)
            return json.loads(text)  # type: ignore[no-any-return]

    @property
    def nbytes(self) -> int:
        return self.table.nbytes if self.table is not None else 0


def dumps_extra(kept: dict[str, object]) -> bytes:
    """JSON of kept keys; the standard library writes what orjson refuses (lone surrogates, huge ints)."""
    if not kept:
        return b"{}"
    try:
        return orjson.dumps(kept)
    except TypeError:
        return json.dumps(kept).encode()
