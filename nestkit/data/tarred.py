"""NeMo tarred datasets: read them as a stream, and write them.

A tarred dataset is a set of tar files (``tarred_audio_filepaths``, brace-expanded:
``audio_{0..127}.tar``; NeMo's ``_OP_``/``_CL_`` spelling works too) plus a manifest whose
``audio_filepath`` is the member name inside a tar. Reading streams each tar (nothing is
unpacked to disk); shards are split across ranks and loader workers so every utterance is read
once per epoch, and a shuffle buffer of ``shuffle_n`` utterances mixes them.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nestkit.data.batch import AudioBatch, AudioItem, SkippedItem
from nestkit.data.dataset import ItemReader, ItemRef, batch_seed
from nestkit.data.manifest import ALL_KEYS, Manifest, read_manifest
from nestkit.errors import DataError

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHOICE = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a_{0..2}.tar`` -> a_0.tar a_1.tar a_2.tar (zero padding kept); ``{x,y}`` alternatives."""
    pattern = pattern.replace("_OP_", "{").replace("_CL_", "}")
    found = [m for m in (_RANGE.search(pattern), _CHOICE.search(pattern)) if m is not None]
    if not found:
        return [pattern]
    m = min(found, key=lambda x: x.start())  # leftmost first: natural order
    if m.re is _RANGE:
        lo, hi = m.group(1), m.group(2)
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        choices = [str(k).zfill(width) for k in range(int(lo), int(hi) + 1)]
    else:
        choices = m.group(1).split(",")
    out: list[str] = []
    for choice in choices:
        out.extend(expand_braces(pattern[: m.start()] + choice + pattern[m.end() :]))
    return out


def shard_paths(spec: str | Sequence[str]) -> list[str]:
    """Every shard named by a pattern, a comma-separated string or a list of them."""
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        for part in re.split(r",(?![^{]*\})", item):
            if part.strip():
                out.extend(expand_braces(part.strip()))
    return out


def _ended_early(tar: tarfile.TarFile) -> bool:
    """Whether a streamed archive stopped at a damaged header: tarfile then ends the iteration
    quietly, as at the end of the archive, but what follows is not the zero padding of a real end."""
    while chunk := tar.fileobj.read(1 << 16):
        if any(chunk):
            return True
    return False


class TarredBatchStream(torch.utils.data.IterableDataset[AudioBatch]):
    """Streams batches of ``batch_size`` utterances from this rank's and worker's shards."""

    def __init__(
        self,
        shards: list[str],
        reader: ItemReader,
        manifest: Manifest,
        *,
        batch_size: int,
        shuffle: bool,
        shuffle_n: int,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.shards, self.reader, self.manifest = shards, reader, manifest
        self.batch_size, self.shuffle, self.shuffle_n, self.drop_last = batch_size, shuffle, shuffle_n, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.by_member: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(manifest.paths):
            self.by_member[Path(p).name].append(i)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_shards(self, worker: int, num_workers: int) -> list[str]:
        """Shards of (rank, worker): one global order per epoch, dealt round-robin."""
        order = list(range(len(self.shards)))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 7]).permutation(len(self.shards)).tolist()
        consumers = self.world_size * num_workers
        me = self.rank * num_workers + worker
        return [self.shards[k] for k in order[me::consumers]]

    def _items(self, shards: list[str], failures: dict[str, int], lost: list[str]) -> Iterator[AudioItem | SkippedItem]:
        for shard in shards:
            try:
                with tarfile.open(shard, mode="r|*") as tar:
                    for member in tar:
                        if not member.isfile():
                            continue
                        indices = self.by_member.get(Path(member.name).name)
                        if not indices:
                            continue  # filtered out by duration, or not listed
                        handle = tar.extractfile(member)
                        data = handle.read() if handle is not None else b""
                        for index in indices:
                            yield self.reader.item(ItemRef.of(self.manifest, index), self.epoch, io.BytesIO(data))
                    if _ended_early(tar):
                        raise tarfile.ReadError("a damaged member header ends the archive before its end")
            except (OSError, tarfile.TarError, EOFError) as exc:
                key = "shard_missing" if isinstance(exc, FileNotFoundError) else "shard_unreadable"
                failures[key] = failures.get(key, 0) + 1
                lost.append(f"{key}: {shard}")  # named, so the report counts each shard once, not once per epoch

    def __iter__(self) -> Iterator[AudioBatch]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        me = self.rank * num_workers + worker
        rng = np.random.default_rng([self.seed, self.epoch, me])
        failures: dict[str, int] = {}
        lost: list[str] = []  # "shard_*: path" of the shards that failed since the last batch
        pending: list[AudioItem | SkippedItem] = []
        position = 0

        noise_seen = dict(self.reader.noise.failures)

        def emit(results: list[AudioItem | SkippedItem]) -> AudioBatch:
            nonlocal position, noise_seen
            counts = dict(failures)
            for k, v in self.reader.noise_failures_since(noise_seen).items():
                counts[k] = counts.get(k, 0) + v
            noise_seen = dict(self.reader.noise.failures)
            failures.clear()  # shared with the item generator: clear, do not rebind
            seed = batch_seed(self.seed, self.epoch, me, position)
            position += 1
            batch = self.reader.batch(results, seed, counts)
            batch.skipped_examples = lost[:] + batch.skipped_examples
            lost.clear()
            return batch

        buffer: list[AudioItem | SkippedItem] = []
        for item in self._items(self.my_shards(worker, num_workers), failures, lost):
            if isinstance(item, SkippedItem) or not self.shuffle or self.shuffle_n <= 1:
                pending.append(item)
            else:
                buffer.append(item)
                if len(buffer) >= self.shuffle_n:
                    j = int(rng.integers(len(buffer)))
                    buffer[j], buffer[-1] = buffer[-1], buffer[j]
                    pending.append(buffer.pop())
            if sum(isinstance(p, AudioItem) for p in pending) >= self.batch_size:
                yield emit(pending)
                pending = []
        rest = [buffer[k] for k in rng.permutation(len(buffer))] if buffer else []
        pending.extend(rest)
        while pending:
            good = [k for k, p in enumerate(pending) if isinstance(p, AudioItem)]
            cut = good[self.batch_size - 1] + 1 if len(good) >= self.batch_size else len(pending)
            chunk, pending = pending[:cut], pending[cut:]
            if len(good) < self.batch_size and self.drop_last:
                chunk = [p for p in chunk if isinstance(p, SkippedItem)]
            if chunk or failures:
                yield emit(chunk)
        if failures or lost:  # nothing was read at all (every shard missing): the failures still count
            yield emit([])


def write_shards(
    manifest: str | Path | Sequence[str | Path], out_dir: str | Path, num_shards: int, progress: bool = True
) -> list[Path]:
    """Pack a manifest's audio into ``num_shards`` tar files plus ``tarred_audio_manifest.json``.

    Utterance ``k`` goes to shard ``k % num_shards`` (so shards hold a mix of the input order);
    members are the files' base names (made unique with ``-k`` when two files share one).
    Returns the shard paths. Missing audio files are left out and reported as a
    :class:`DataError` only if nothing could be written.
    """
    if num_shards < 1:
        raise DataError(f"num_shards must be at least 1, got {num_shards}")
    paths = [str(m) for m in manifest] if isinstance(manifest, (list, tuple)) else str(manifest)
    data = read_manifest(paths, keep=ALL_KEYS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards = [out / f"audio_{k}.tar" for k in range(num_shards)]
    used: set[str] = set()
    lines: list[str] = []
    missing = 0
    tars = [tarfile.open(p, "w") for p in shards]
    try:
        order = range(len(data))
        if progress:
            from rich.progress import track

            order = track(order, description=f"writing {num_shards} shards", transient=True)  # type: ignore[assignment]
        for k in order:
            src = Path(data.paths[k])
            if not src.is_file():
                missing += 1
                continue
            name = src.name
            if name in used:
                name = f"{src.stem}-{k}{src.suffix}"
            used.add(name)
            shard = k % num_shards
            tars[shard].add(str(src), arcname=name)
            entry: dict[str, Any] = {"audio_filepath": name, "duration": float(data.durations[k])}
            if data.offsets[k]:
                entry["offset"] = float(data.offsets[k])
            entry.update(data.extras[k])
            entry["shard_id"] = shard
            lines.append(json.dumps(entry))
    finally:
        for t in tars:
            t.close()
    if not lines:
        raise DataError(f"{manifest}: no audio file could be read, no shard written")
    (out / "tarred_audio_manifest.json").write_text("\n".join(lines) + "\n")
    if missing:
        print(f"warning: {missing} audio files listed in {manifest} do not exist and were left out")
    return shards
