"""The parts of the Lhotse data path (see :mod:`nestkit.data.lhotse`): numbered lazy cuts, the
sampler a recipe asks for, decoding cuts into nestkit batches, the ``cuts_path`` and ``shar_path``
sources, and a Lhotse noise CutSet as nestkit's noise manifest.

A cut's index (``batch.indices``) is its line in ``cuts_path``, or for Shar
``(shard number << SHARD_BITS) + its line in the shard``: unique, and known without a count.
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from lhotse.audio.utils import AudioLoadingError, DurationMismatchError
from lhotse.cut import Cut
from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler
from lhotse.dataset.sampling.dynamic_bucketing import estimate_duration_buckets
from lhotse.lazy import LazyManifestIterator
from lhotse.shar import LazySharIterator

from nestkit.data.audio import AudioReadError, resample
from nestkit.data.batch import AudioBatch, AudioItem, SkippedItem
from nestkit.data.columns import KeptExtras, ManifestPaths, StringTable, encoded
from nestkit.data.config import DatasetConfig
from nestkit.data.dataset import ItemReader, batch_seed
from nestkit.data.manifest import Manifest, ManifestReport, read_manifest, split_paths
from nestkit.errors import DataError

SHARD_BITS = 32  # a Shar cut's index is (shard number << SHARD_BITS) + its line in the shard


# ---------------------------------------------------------------------------- cuts and samplers


class NumberedCuts:
    """Lazy cuts from several sources in turn, each tagged ``cut.nestkit_index = base + line``."""

    def __init__(self, parts: Sequence[tuple[int, Iterable[Cut]]]) -> None:
        self.parts = parts

    def __iter__(self) -> Iterator[Cut]:
        for base, cuts in self.parts:
            for line, cut in enumerate(cuts):
                cut.nestkit_index = base + line
                yield cut


@dataclass(frozen=True)
class Within:
    """Keeps cuts of ``min_duration <= seconds <= max_duration`` (a bound may be None)."""

    low: float | None
    high: float | None

    def __call__(self, cut: Cut) -> bool:
        return (self.low is None or cut.duration >= self.low) and (self.high is None or cut.duration <= self.high)


@dataclass(frozen=True)
class SamplerSettings:
    """What one Lhotse sampler is built from; plain values, so Shar workers build their own."""

    batch_duration: float | None
    batch_cuts: int | None
    duration_bins: tuple[float, ...] | None  # None: no bucketing (DynamicCutSampler)
    buffer_size: int
    shuffle_buffer_size: int
    quadratic_duration: float | None
    shuffle: bool
    drop_last: bool
    keep: Within

    def sampler(self, cuts: CutSet, *, seed: int, rank: int, world_size: int, epoch: int) -> Any:
        """A sampler at the start of ``epoch`` (its shuffling follows ``seed + epoch``)."""
        common: dict[str, Any] = {
            "max_duration": self.batch_duration, "max_cuts": self.batch_cuts, "quadratic_duration": self.quadratic_duration,
            "shuffle": self.shuffle, "drop_last": self.drop_last, "seed": seed, "rank": rank, "world_size": world_size,
        }
        cuts = cuts.filter(self.keep)
        if self.duration_bins is None:
            sampler = DynamicCutSampler(cuts, shuffle_buffer_size=self.shuffle_buffer_size, **common)
        else:
            sampler = DynamicBucketingSampler(cuts, duration_bins=list(self.duration_bins), buffer_size=self.buffer_size, **common)
        sampler.set_epoch(epoch)
        return sampler


def sampler_settings(cfg: DatasetConfig, metadata: CutSet, source: str) -> SamplerSettings:
    """The recipe's sampler; bucket boundaries estimated from the first cuts' metadata unless given."""
    keep = Within(cfg.min_duration, cfg.max_duration)
    bins: tuple[float, ...] | None = None  # stays None (no buckets) for fewer than two
    if cfg.use_bucketing:
        if cfg.bucket_duration_bins:
            bins = tuple(cfg.bucket_duration_bins)
        elif cfg.bucket_duration_bins is None:
            first = list(islice(metadata.filter(keep), cfg.num_cuts_for_bins_estimate))
            if not first:
                raise DataError(f"{source}: no cut between min_duration and max_duration" if keep.low or keep.high
                                else f"{source}: no cuts")
            buckets = min(cfg.num_buckets, len(first))
            if buckets > 1:
                bins = tuple(estimate_duration_buckets(first, num_buckets=buckets)) or None
    # batch_size caps the cuts of a batch when given (NeMo: batch_size), or alone sets fixed-size batches
    cap = cfg.batch_size if "batch_size" in cfg.model_fields_set or cfg.batch_duration is None else None
    return SamplerSettings(
        batch_duration=cfg.batch_duration, batch_cuts=cap, duration_bins=bins,
        buffer_size=cfg.bucket_buffer_size + cfg.shuffle_buffer_size,  # Lhotse >= 1.20 adds the two up itself
        shuffle_buffer_size=cfg.shuffle_buffer_size, quadratic_duration=cfg.quadratic_duration,
        shuffle=cfg.shuffle, drop_last=cfg.drop_last, keep=keep,
    )


def cuts_file(path: str) -> Path:
    """``cuts_path``, checked: an existing CutSet in JSON lines."""
    file = Path(path)
    if not file.name.endswith((".jsonl", ".jsonl.gz")):
        raise DataError(f"cuts_path {path}: nestkit reads CutSets lazily from .jsonl or .jsonl.gz "
                        "(convert it: lhotse copy IN OUT.jsonl.gz)")
    if not file.is_file():
        raise DataError(f"cuts_path {path}: no such file")
    return file


class CutsFile:
    """The cuts of one ``.jsonl``/``.jsonl.gz`` file, read lazily; a file that breaks off
    (truncated, not JSON) is a one-line DataError naming it, not a gzip or JSON traceback."""

    def __init__(self, path: Path | str, cuts: Iterable[Cut]) -> None:
        self.path, self.cuts = path, cuts

    def __iter__(self) -> Iterator[Cut]:
        try:
            yield from self.cuts
        except (OSError, EOFError, ValueError) as exc:
            raise DataError(f"{self.path}: unreadable cuts file ({type(exc).__name__}: {exc})") from None


def cut_metadata(path: Path) -> CutSet:
    """The cuts of ``cuts_path``, numbered by line, read lazily."""
    return CutSet(NumberedCuts([(0, CutsFile(path, LazyManifestIterator(path)))]))


def shar_metadata(shards: list[dict[str, str]]) -> CutSet:
    """Every shard's cut metadata, numbered (no audio read)."""
    return CutSet(NumberedCuts([(k << SHARD_BITS, CutsFile(s["cuts"], LazySharIterator(fields={"cuts": [s["cuts"]]})))
                                for k, s in enumerate(shards)]))


def shar_shards(spec: str | list[str], world_size: int) -> list[dict[str, str]]:
    """Every shard of the Shar directories, as its ``cuts`` and ``recording`` files."""
    shards: list[dict[str, str]] = []
    for folder in [spec] if isinstance(spec, str) else spec:
        where = Path(folder)
        if not where.is_dir():
            raise DataError(f"shar_path {folder}: no such directory")
        cuts = sorted(where.glob("cuts.*.jsonl*"))
        audio = {p.name.split(".")[1]: p for p in where.glob("recording.*.tar*")}
        if not cuts:
            raise DataError(f"shar_path {folder}: no Shar shards in it (cuts.000000.jsonl.gz, ...)")
        for c in cuts:
            number = c.name.split(".")[1]
            if number not in audio:
                raise DataError(f"shar_path {folder}: shard {number} has no recording.{number}.tar "
                                "(nestkit reads the audio from Shar's recording field)")
            shards.append({"cuts": str(c), "recording": str(audio[number])})
    if len(shards) < world_size:
        raise DataError(f"shar_path has {len(shards)} shards for {world_size} ranks: each rank needs at least one "
                        "(write smaller shards: CutSet.to_shar(..., shard_size=N))")
    return shards


# ---------------------------------------------------------------------------- decoding


def _where(cut: Cut) -> str:
    sources = getattr(getattr(cut, "recording", None), "sources", None) or []
    files = [s.source for s in sources if s.type == "file"]
    return f"{cut.id} ({files[0]})" if files else cut.id


def _missing(cut: Cut) -> bool:
    sources = getattr(getattr(cut, "recording", None), "sources", None) or []
    return any(s.type == "file" and not os.path.exists(s.source) for s in sources)


def decode(cut: Cut, sample_rate: int, channel_selector: int | None) -> torch.Tensor:
    """A cut's audio as (T,) float32 mono at ``sample_rate``; :class:`AudioReadError` if unusable."""
    try:
        samples = cut.load_audio()
    except (AudioLoadingError, DurationMismatchError, OSError, RuntimeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise AudioReadError("missing" if _missing(cut) else "unreadable", f"{cut.id}: {detail}") from None
    if samples is None or samples.size == 0:
        raise AudioReadError("empty", cut.id)
    samples = np.atleast_2d(samples)
    if channel_selector is not None:
        if channel_selector >= samples.shape[0]:
            raise AudioReadError("unreadable", f"{cut.id}: no channel {channel_selector} (has {samples.shape[0]})")
        mono = samples[channel_selector]
    else:
        mono = samples.mean(axis=0) if samples.shape[0] > 1 else samples[0]
    if not np.isfinite(mono).all():
        raise AudioReadError("non_finite", cut.id)
    return resample(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)), int(cut.sampling_rate), sample_rate)


def make_batch(reader: ItemReader, cuts: Iterable[Cut], epoch: int, seed: int) -> AudioBatch:
    """Decode ``cuts``, draw their noise and collate them (augmented in the loader when so set)."""
    before = dict(reader.noise.failures)
    results: list[AudioItem | SkippedItem] = []
    for cut in cuts:
        index = int(cut.nestkit_index)
        try:
            audio = decode(cut, reader.sample_rate, reader.channel_selector)
        except AudioReadError as err:
            results.append(SkippedItem(index, err.reason, _where(cut)))
            continue
        results.append(reader.utterance(index, audio, epoch))
    return reader.batch(results, seed, reader.noise_failures_since(before))


# ---------------------------------------------------------------------------- the two sources


@dataclass(frozen=True)
class CutBatchSpec:
    """One batch of ``cuts_path``: its cuts (metadata), epoch, position and seed."""

    cuts: CutSet
    epoch: int
    position: int
    seed: int


class CutBatchDataset(torch.utils.data.Dataset[AudioBatch]):
    """Map-style: ``dataset[spec]`` decodes the batch the main process sampled."""

    def __init__(self, reader: ItemReader) -> None:
        self.reader = reader

    def __getitem__(self, spec: CutBatchSpec) -> AudioBatch:  # type: ignore[override]
        return make_batch(self.reader, spec.cuts, spec.epoch, spec.seed)


class CutSpecs:
    """The loader's sampler for ``cuts_path``: Lhotse's sampler in the main process, from batch ``start``."""

    def __init__(self, path: Path, settings: SamplerSettings, *, seed: int, rank: int, world_size: int, train: bool) -> None:
        self.path, self.settings = path, settings
        self.seed, self.rank, self.world_size, self.train = seed, rank, world_size, train
        self.epoch, self.start = 0, 0

    def __iter__(self) -> Iterator[CutBatchSpec]:
        start, self.start = self.start, 0
        epoch = self.epoch if self.train else 0  # validation noise/mixing is the same every time
        sampler = self.settings.sampler(cut_metadata(self.path), seed=self.seed, rank=self.rank, world_size=self.world_size,
                                        epoch=self.epoch)
        for position, cuts in enumerate(sampler):
            if position >= start:  # earlier ones: replayed over metadata only
                yield CutBatchSpec(cuts, epoch, position, batch_seed(self.seed, epoch, self.rank, position))


class SharBatchStream(torch.utils.data.IterableDataset[tuple[int, AudioBatch]]):
    """``shar_path``: each loader worker samples and decodes its own shards; yields (worker, batch)."""

    def __init__(self, shards: list[dict[str, str]], reader: ItemReader, settings: SamplerSettings, *, seed: int,
                 rank: int, world_size: int, train: bool) -> None:
        self.shards, self.reader, self.settings = shards, reader, settings
        self.seed, self.rank, self.world_size, self.train = seed, rank, world_size, train
        self.epoch = 0
        self.skip: list[int] = []  # batches each worker passes over undecoded (resume)

    def worker_shards(self, worker: int, workers: int) -> list[int]:
        """Shard numbers of (rank, worker): the epoch's order dealt to ranks, then to workers."""
        order = list(range(len(self.shards)))
        if self.train and self.settings.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 11]).permutation(len(order)).tolist()
        return order[self.rank :: self.world_size][worker::workers]

    def __iter__(self) -> Iterator[tuple[int, AudioBatch]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = self.worker_shards(worker, workers)
        if not mine:
            return
        me = self.rank * workers + worker
        epoch = self.epoch if self.train else 0
        lost: list[str] = []  # "shard_unreadable: path" of the shards that broke off since the last batch
        parts = [(k << SHARD_BITS, GuardedShard(self.shards[k], lost)) for k in mine]
        sampler = self.settings.sampler(CutSet(NumberedCuts(parts)), seed=batch_seed(self.seed, me), rank=0,
                                        world_size=1, epoch=self.epoch)
        skip = self.skip[worker] if worker < len(self.skip) else 0
        position = 0
        for position, cuts in enumerate(sampler):
            if position >= skip:
                batch = make_batch(self.reader, cuts, epoch, batch_seed(self.seed, epoch, me, position))
                yield worker, _with_lost(batch, lost)
        if lost:  # a shard broke off after the last batch, or no batch came at all: the failure still counts
            yield worker, _with_lost(self.reader.batch([], batch_seed(self.seed, epoch, me, position + 1), {}), lost)


class GuardedShard:
    """One Shar shard's cuts with their audio; a shard that breaks off (truncated or damaged tar or
    cuts file) ends there and is named in ``lost``, as a damaged NeMo tar shard is."""

    def __init__(self, fields: dict[str, str], lost: list[str]) -> None:
        self.fields, self.lost = fields, lost

    def __iter__(self) -> Iterator[Cut]:
        try:
            yield from LazySharIterator(fields={name: [path] for name, path in self.fields.items()})
        except (OSError, EOFError, tarfile.TarError, ValueError):
            self.lost.append(f"shard_unreadable: {self.fields['recording']}")


def _with_lost(batch: AudioBatch, lost: list[str]) -> AudioBatch:
    """``batch`` also carrying the shards lost since the last one (then forgotten)."""
    for entry in lost:
        reason = entry.split(":", 1)[0]
        batch.skipped[reason] = batch.skipped.get(reason, 0) + 1
    batch.skipped_examples = lost[:] + batch.skipped_examples
    lost.clear()
    return batch


# ---------------------------------------------------------------------------- noise


def _is_cutset(path: Path) -> bool:
    """Whether a noise manifest's first line is a Lhotse cut (anything unreadable: leave it to the NeMo reader)."""
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")) as handle:
            first = next((line for line in handle if line.strip()), "")
        entry = json.loads(first) if first else None
    except (OSError, ValueError):
        return False
    return isinstance(entry, dict) and "recording" in entry


def read_noise(spec: str | list[str]) -> Manifest:
    """``noise_manifest``: NeMo noise manifest(s), or one Lhotse CutSet whose cuts are audio files."""
    files = split_paths(spec)
    if not any(_is_cutset(f) for f in files):
        return read_manifest(spec)
    if len(files) > 1:
        raise DataError(f"noise_manifest {spec}: give one Lhotse noise CutSet, or NeMo noise manifests")
    paths: list[str] = []
    starts: list[float] = []
    seconds: list[float] = []
    for cut in CutSet.from_jsonl_lazy(files[0]):
        sources = getattr(getattr(cut, "recording", None), "sources", None) or []
        if len(sources) != 1 or sources[0].type != "file":
            raise DataError(f"noise_manifest {files[0]}: cut {cut.id} is not one audio file "
                            "(nestkit reads noise from files: write the noise CutSet from audio files)")
        paths.append(sources[0].source)
        starts.append(float(cut.start))
        seconds.append(float(cut.duration))
    names, folders = StringTable.build([encoded(paths)]), StringTable.build([encoded([""])])
    report = ManifestReport(items=len(paths), seconds=float(sum(seconds)))
    return Manifest(ManifestPaths(names, np.zeros(len(paths), np.uint8), folders), np.asarray(seconds, np.float64),
                    np.asarray(starts, np.float64), KeptExtras(None, len(paths)), report, files=[str(files[0])])
