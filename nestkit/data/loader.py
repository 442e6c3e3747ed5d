"""``build_dataloader``: the trainer's entry point to the data path.

The returned :class:`AudioLoader` yields :class:`~nestkit.data.batch.AudioBatch` objects and
supports ``set_epoch``, ``state_dict``/``load_state_dict`` (epoch + batch position, for an
exact resume, and the skips found so far), ``num_batches()`` (None for tarred data, whose length
is unknown), ``padding_fraction``, ``summary`` (items, hours, dropped), running skip totals in
``skipped`` and ``skipped_report()`` (:class:`~nestkit.data.skips.SkipReport`: each skipped item
once, by reason, with paths).

Batch augmentation runs in the loader workers by default. With ``augment_on_device: true``
the batch arrives with ``noisy_audio = audio + noise`` and the trainer calls
``batch = loader.device_augmentor(batch.to(device))`` inside its step; the result is the same
as in-loader augmentation up to float rounding (same seed per batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nestkit.data.batch import AudioBatch, BatchAugmentor, augment_on_its_device
from nestkit.data.config import DatasetConfig
from nestkit.data.dataset import BatchSpec, ItemReader, ItemRef, ManifestBatchDataset, batch_seed
from nestkit.data.lhotse_keys import INSTALL_HINT
from nestkit.data.manifest import Manifest, ManifestReport, first_existing, read_manifest
from nestkit.data.noise import NoiseSource
from nestkit.data.samplers import BucketedBatchSampler, ShuffledBatchSampler, padding_fraction
from nestkit.data.skips import SkipReport, SkipTally
from nestkit.data.tarred import TarredBatchStream, shard_paths
from nestkit.data.workers import pin_memory, torch_loader, worker_count
from nestkit.errors import DataError

if TYPE_CHECKING:
    from nestkit.data.lhotse import LhotseLoader
    from nestkit.registry import Registry

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo_data"


def demo_manifests() -> tuple[Path, Path, Path]:
    """(train, validation, noise) manifests of the bundled demo data (see its LICENSE.md)."""
    paths = tuple(DEMO_DIR / f"{name}_manifest.json" for name in ("train", "val", "noise"))
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: bundled demo data is missing (rebuild it with scripts/build_demo_data.py)")
    return paths  # type: ignore[return-value]


class _SpecSampler:
    """Turns a batch sampler's index lists into :class:`BatchSpec` s (epoch, position, seed)."""

    def __init__(self, sampler: ShuffledBatchSampler | BucketedBatchSampler, manifest: Manifest, seed: int, rank: int,
                 train: bool) -> None:
        self.sampler, self.manifest, self.seed, self.rank, self.train = sampler, manifest, seed, rank, train

    def __iter__(self) -> Iterator[BatchSpec]:
        start = self.sampler.start
        epoch = self.sampler.epoch if self.train else 0  # validation noise/mixing is the same every time
        for pos, indices in enumerate(self.sampler, start=start):
            items = tuple(ItemRef.of(self.manifest, i) for i in indices)
            yield BatchSpec(items, epoch, pos, batch_seed(self.seed, epoch, self.rank, pos))

    def __len__(self) -> int:
        return len(self.sampler)


class AudioLoader:
    """Iterable of :class:`AudioBatch` with epoch/position state; see the module docstring.

    ``batch.skipped`` counts the utterances dropped since the previous batch (by reason);
    ``loader.skipped`` holds the totals since the loader was built, counting a file that is bad
    every epoch once per epoch (the per-step counters); ``skipped_report()`` has each item once.
    Skips in batches where no utterance was usable ride on the next delivered batch
    (``pending_skips`` until then).
    """

    def __init__(
        self,
        cfg: DatasetConfig,
        manifest: Manifest,
        reader: ItemReader,
        *,
        sampler: ShuffledBatchSampler | BucketedBatchSampler | None,
        stream: TarredBatchStream | None,
        seed: int,
        rank: int,
        train: bool,
        device_augmentor: BatchAugmentor | None = None,
    ) -> None:
        self.cfg, self.manifest, self.reader = cfg, manifest, reader
        self.sampler, self.stream = sampler, stream
        self.seed, self.rank, self.train = seed, rank, train
        self.epoch, self.position = 0, 0
        self.skipped: dict[str, int] = {}
        self.pending_skips: dict[str, int] = {}
        self.tally = SkipTally(", ".join(manifest.files), cfg.max_skipped_items, size=len(manifest),
                               what="audio" if train else "validation audio")
        self._device_aug = device_augmentor
        self._generators: dict[str, torch.Generator] = {}
        self._loader: torch.utils.data.DataLoader[Any] | None = None
        if sampler is not None:
            self._loader = self._torch_loader(ManifestBatchDataset(reader), _SpecSampler(sampler, manifest, seed, rank, train))

    def _torch_loader(self, dataset: Any, sampler: Any = None) -> torch.utils.data.DataLoader[Any]:
        key = f"{'train' if self.train else 'validation'}_ds.num_workers"
        return torch_loader(
            dataset, sampler=sampler, workers=worker_count(self.cfg.num_workers, key), pin=pin_memory(self.cfg.pin_memory),
            context=self.cfg.multiprocessing_context, seed=self.seed + 7919 * self.rank, persistent=sampler is not None,
        )

    # ------------------------------------------------------------------ epoch and resume state

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch (new order, new noise draws)."""
        self.epoch, self.position = epoch, 0
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        if self.stream is not None:
            self.stream.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Epoch, the number of batches of it already delivered, and the skips so far."""
        return {"epoch": self.epoch, "position": self.position, "skips": self.tally.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration continues epoch ``epoch`` at batch ``position``; the skip
        report goes on from the saved one (a checkpoint without it: from nothing)."""
        self.set_epoch(int(state["epoch"]))
        self.position = int(state.get("position", 0))
        if "skips" in state:
            self.tally.load_state_dict(state["skips"])

    def num_batches(self) -> int | None:
        """Batches per epoch on this rank; None for tarred data (the stream decides)."""
        return None if self.sampler is None else len(self.sampler)

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[AudioBatch]:
        start = self.position
        if self.sampler is not None:
            assert self._loader is not None
            self.sampler.start = start
            batches: Iterator[AudioBatch] = iter(self._loader)
        else:
            assert self.stream is not None
            batches = iter(self._torch_loader(self.stream))
            for _ in range(start):  # a stream cannot seek: replay (deterministic) up to the position
                if next(batches, None) is None:
                    break
        carried = self.pending_skips  # from batches with no usable utterance, not yet reported
        for batch in batches:
            self.position += 1
            self._count(batch)
            if len(batch) == 0:  # every utterance of it was unusable: report with the next one
                for k, v in batch.skipped.items():
                    carried[k] = carried.get(k, 0) + v
                continue
            if carried:
                for k, v in carried.items():
                    batch.skipped[k] = batch.skipped.get(k, 0) + v
                carried.clear()
            yield batch

    def _count(self, batch: AudioBatch) -> None:
        for k, v in batch.skipped.items():
            self.skipped[k] = self.skipped.get(k, 0) + v
        self.tally.add(batch.skipped, batch.skipped_examples, batch.indices)

    def skipped_report(self) -> SkipReport:
        """Distinct skipped items so far by reason, with the first few paths and the full list."""
        return self.tally.report()

    @property
    def skip_examples(self) -> list[str]:
        """The first few skipped items, as "reason: path"."""
        return self.tally.examples

    # ------------------------------------------------------------------ augmentation on the device

    @property
    def augment_on_device(self) -> bool:
        return self._device_aug is not None

    def device_augmentor(self, batch: AudioBatch) -> AudioBatch:
        """Apply the batch augmentor where ``batch`` lives (call after ``batch.to(device)``).

        A no-op when augmentation already ran in the loader or none is configured."""
        return augment_on_its_device(self._device_aug, self._generators, batch)

    # ------------------------------------------------------------------ reports

    @property
    def summary(self) -> ManifestReport:
        """Items and hours kept, and what was dropped (by duration filter or malformed line)."""
        return self.manifest.report

    @property
    def padding_fraction(self) -> float | None:
        """Padded share of the samples of this rank's current epoch (None for tarred data)."""
        if self.sampler is None:
            return None
        return padding_fraction(self.sampler.batches(), self.manifest.durations)

    def describe(self) -> str:
        """One line for the training log."""
        kind = "tarred" if self.stream is not None else ("bucketed" if isinstance(self.sampler, BucketedBatchSampler) else "batches")
        pad = self.padding_fraction
        extra = f", padding {pad:.1%}" if pad is not None else ""
        return f"{self.summary.summary()} ({kind}{extra})"


def lhotse_loader_builder(train: bool) -> Any:
    """:func:`nestkit.data.lhotse.build_lhotse_loader`, imported only now; one line when Lhotse is missing."""
    try:
        from nestkit.data.lhotse import build_lhotse_loader
    except ImportError as exc:
        why = "which is not installed" if exc.name == "lhotse" else f"which fails to import ({exc})"
        raise DataError(f"model.{'train' if train else 'validation'}_ds.use_lhotse: true needs Lhotse, {why} "
                        f"({INSTALL_HINT})") from None
    return build_lhotse_loader


def build_dataloader(
    cfg: DatasetConfig,
    *,
    sample_rate: int,
    train: bool,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    registry: Registry | None = None,
) -> AudioLoader | LhotseLoader:
    """The loader for one split. ``cfg.manifest_filepath`` must be set (see :func:`demo_manifests`),
    or ``use_lhotse`` with Lhotse cuts or Shar (:mod:`nestkit.data.lhotse`).

    The batch augmentor is built from ``registry``: pass the recipe's (``recipe.registry``);
    None means the installed plugins, as for ``nestkit.build``.

    Uses the bucketed sampler when ``batch_duration`` is set, NeMo's fixed-size batches
    otherwise, and streams tar shards when ``is_tarred``. Validation (``train=False``) draws
    the same noise and mixing every epoch.
    """
    if cfg.manifest_filepath is None and not cfg.use_lhotse:
        raise DataError("manifest_filepath is not set (nestkit.data.demo_manifests() gives the bundled demo data)")
    if cfg.sample_rate != sample_rate:
        raise DataError(f"dataset sample_rate {cfg.sample_rate} differs from the model's {sample_rate}")
    augmentor = None
    if cfg.batch_augmentor is not None:  # built here: a bad section fails before any worker starts
        if registry is None:
            from nestkit.plugins import get_registry

            registry = get_registry()
        augmentor = registry.build("augmentor", cfg.batch_augmentor, key="batch_augmentor")
    seed = cfg.seed if cfg.seed is not None else seed
    if cfg.use_lhotse:
        return lhotse_loader_builder(train)(cfg, augmentor, sample_rate=sample_rate, train=train, seed=seed, rank=rank,
                                            world_size=world_size, epoch=epoch)
    assert cfg.manifest_filepath is not None
    manifest = read_manifest(
        cfg.manifest_filepath,
        min_duration=cfg.min_duration,
        max_duration=cfg.max_duration,
        resolve_paths=not cfg.is_tarred,
    )
    if not cfg.is_tarred and first_existing(manifest) is None:
        raise DataError(
            f"all {len(manifest)} audio files of {', '.join(manifest.files)} are missing; first: {manifest.paths[0]}"
            " (relative paths resolve against the manifest's folder)"
        )
    noise_manifest = read_manifest(cfg.noise_manifest) if cfg.noise_manifest is not None else None
    noise = NoiseSource(noise_manifest, sample_rate=sample_rate, pool_seconds=cfg.noise_pool_seconds)
    reader = ItemReader(
        noise,
        sample_rate=sample_rate,
        seed=seed,
        min_audio_len_secs=cfg.min_audio_len_secs,
        pad_audio_mode=cfg.pad_audio_mode,
        channel_selector=cfg.channel_selector,
        augmentor=None if cfg.augment_on_device else augmentor,
    )
    sampler: ShuffledBatchSampler | BucketedBatchSampler | None = None
    stream: TarredBatchStream | None = None
    if cfg.is_tarred:
        assert cfg.tarred_audio_filepaths is not None
        stream = TarredBatchStream(
            shard_paths(cfg.tarred_audio_filepaths),
            reader,
            manifest,
            batch_size=cfg.batch_size,
            shuffle=cfg.shuffle,
            shuffle_n=cfg.shuffle_n or 0,
            drop_last=cfg.drop_last,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
    elif cfg.batch_duration is not None:
        sampler = BucketedBatchSampler(
            manifest.durations,
            cfg.batch_duration,
            num_buckets=cfg.num_buckets,
            shuffle=cfg.shuffle,
            drop_last=cfg.drop_last,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
    else:
        sampler = ShuffledBatchSampler(
            len(manifest),
            cfg.batch_size,
            shuffle=cfg.shuffle,
            drop_last=cfg.drop_last,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
    loader = AudioLoader(
        cfg, manifest, reader, sampler=sampler, stream=stream, seed=seed, rank=rank, train=train,
        device_augmentor=augmentor if cfg.augment_on_device else None,
    )
    loader.set_epoch(epoch)
    return loader
