"""Training data from Lhotse: CutSet manifests and Shar directories, batched by Lhotse's samplers.

A dataset section with ``use_lhotse: true`` reads ``cuts_path`` (a CutSet ``.jsonl``/``.jsonl.gz``,
lazily) or ``shar_path`` (Shar directories) under NeMo's Lhotse key names; the NeMo keys nestkit
does not implement are refused (:mod:`nestkit.data.lhotse_keys`). Lhotse's DynamicBucketingSampler
makes batches of ``batch_duration`` seconds (Lhotse's measure: the sum of the cuts' durations);
the batches are then made exactly as from a NeMo manifest: decoded to mono at the model's rate,
noise drawn from ``noise_manifest`` (a NeMo noise manifest or a Lhotse noise CutSet of audio files),
and the batch augmentor mixing the real samples only, in the loader or on the device.

Who reads what:

* ``cuts_path``: each rank runs the sampler over the whole CutSet's metadata in its main process
  and keeps every ``world_size``-th batch (Lhotse's rank split: no overlap, the same number of
  batches on every rank); loader workers decode.
* ``shar_path``: the shards, in an order shuffled per epoch, are dealt to the ranks and then to
  each rank's loader workers; every worker samples and decodes its own shards. Nothing is read
  twice, but ranks may get different numbers of batches in an epoch: bound such runs by
  ``trainer.max_steps``.

Resume (``state_dict``: the epoch, its batches delivered, how many came from each worker, and
the skips found so far):

* ``cuts_path`` resumes exactly: the sampler is replayed over the cut metadata, no audio read, to
  the saved batch, and the run goes on with the same batches, noise and mixing as if never stopped.
  Lhotse's own sampler ``state_dict`` is not used: it counts the batches handed to loader workers,
  prefetched ones included, and resuming from it would skip batches that were never trained on.
* ``shar_path`` resumes exactly in content: each worker passes over the batches it had delivered
  without decoding them (their shards are read again), so the rest of the epoch is the same
  batches, noise and mixing. Their order is the same with ``num_workers`` 0 or 1; with more the
  workers' turns can interleave differently. Resumed with another ``num_workers``, the shards are
  dealt differently: the epoch continues after as many batches as were trained, approximately
  (some of its cuts may be seen twice or not at all).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from nestkit.data.batch import AudioBatch, BatchAugmentor, augment_on_its_device
from nestkit.data.config import DatasetConfig
from nestkit.data.dataset import ItemReader
from nestkit.data.lhotse_sources import (
    CutBatchDataset,
    CutSpecs,
    SamplerSettings,
    SharBatchStream,
    cut_metadata,
    cuts_file,
    read_noise,
    sampler_settings,
    shar_metadata,
    shar_shards,
)
from nestkit.data.noise import NoiseSource
from nestkit.data.skips import SkipReport, SkipTally
from nestkit.data.workers import pin_memory, torch_loader, worker_count


class LhotseLoader:
    """Batches of Lhotse cuts or Shar for the trainer (a :class:`nestkit.train.contracts.TrainLoader`).

    ``batch.skipped`` counts the cuts dropped since the previous batch (by reason), ``skipped``
    the totals (a bad cut once per epoch), ``skipped_report()`` each cut once; skips of a batch
    with no usable cut ride on the next batch delivered.
    """

    def __init__(self, cfg: DatasetConfig, source: CutSpecs | SharBatchStream, reader: ItemReader, *, name: str,
                 seed: int, rank: int, train: bool, device_augmentor: BatchAugmentor | None) -> None:
        self.cfg, self.source, self.name, self.seed, self.rank = cfg, source, name, seed, rank
        self.skipped: dict[str, int] = {}
        self.pending_skips: dict[str, int] = {}
        self.tally = SkipTally(name, cfg.max_skipped_items, what="audio" if train else "validation audio")
        self._device_aug = device_augmentor
        self._generators: dict[str, torch.Generator] = {}
        self._workers = worker_count(cfg.num_workers, f"{'train' if train else 'validation'}_ds.num_workers")
        self._roles = max(1, self._workers) if isinstance(source, SharBatchStream) else 1  # who counts batches
        self.epoch, self.position = 0, 0
        self.worker_batches = [0] * self._roles  # batches of this epoch delivered from each Shar worker
        # cuts_path: one loader whose workers stay (the sampler lives here); Shar: a fresh one per pass
        self._loader = self._torch_loader(CutBatchDataset(reader), source) if isinstance(source, CutSpecs) else None

    def _torch_loader(self, dataset: Any, sampler: Any = None) -> torch.utils.data.DataLoader[Any]:
        return torch_loader(dataset, sampler=sampler, workers=self._workers, pin=pin_memory(self.cfg.pin_memory),
                            context=self.cfg.multiprocessing_context, seed=self.seed + 7919 * self.rank,
                            persistent=sampler is not None)

    # ------------------------------------------------------------------ epoch and resume state

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch (new order, new noise draws)."""
        self.epoch, self.position, self.worker_batches = epoch, 0, [0] * self._roles
        self.source.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """Epoch, batches of it delivered, how many came from each Shar worker, the skips so far."""
        return {"epoch": self.epoch, "position": self.position, "worker_batches": list(self.worker_batches),
                "skips": self.tally.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next pass continues epoch ``epoch`` after batch ``position`` (module docstring)."""
        self.set_epoch(int(state["epoch"]))
        self.position = int(state.get("position", 0))
        counts = [int(n) for n in state.get("worker_batches", [])]
        if len(counts) != self._roles:  # saved with another num_workers: as many batches, dealt round-robin
            counts = [len(range(w, self.position, self._roles)) for w in range(self._roles)]
        self.worker_batches = counts
        if "skips" in state:
            self.tally.load_state_dict(state["skips"])

    def num_batches(self) -> int | None:
        """None: a lazily read CutSet's batch count is known only at its end."""
        return None

    # ------------------------------------------------------------------ iteration

    def _tagged(self) -> Iterator[tuple[int, AudioBatch]]:
        if self._loader is not None:
            assert isinstance(self.source, CutSpecs)
            self.source.start = self.position
            return ((0, batch) for batch in self._loader)
        assert isinstance(self.source, SharBatchStream)
        self.source.skip = list(self.worker_batches)
        return iter(self._torch_loader(self.source))

    def __iter__(self) -> Iterator[AudioBatch]:
        carried = self.pending_skips  # from batches with no usable cut, not yet reported
        for worker, batch in self._tagged():
            self.position += 1
            self.worker_batches[worker] += 1
            self.tally.add(batch.skipped, batch.skipped_examples, batch.indices)
            for k, v in batch.skipped.items():
                self.skipped[k] = self.skipped.get(k, 0) + v
            if len(batch) == 0:
                for k, v in batch.skipped.items():
                    carried[k] = carried.get(k, 0) + v
                continue
            for k, v in carried.items():
                batch.skipped[k] = batch.skipped.get(k, 0) + v
            carried.clear()
            yield batch

    def skipped_report(self) -> SkipReport:
        """Distinct skipped cuts so far by reason, with the first few and the full list."""
        return self.tally.report()

    # ------------------------------------------------------------------ augmentation on the device

    @property
    def augment_on_device(self) -> bool:
        return self._device_aug is not None

    def device_augmentor(self, batch: AudioBatch) -> AudioBatch:
        """Apply the batch augmentor where ``batch`` lives (a no-op when it ran in the loader)."""
        return augment_on_its_device(self._device_aug, self._generators, batch)

    def describe(self) -> str:
        """One line for the training log."""
        return f"{self.name} ({_sampling(self.source.settings)})"


def _sampling(s: SamplerSettings) -> str:
    size = f"{s.batch_duration:g} s" if s.batch_duration is not None else f"{s.batch_cuts} cuts"
    cap = f", at most {s.batch_cuts} cuts" if s.batch_duration is not None and s.batch_cuts is not None else ""
    if s.duration_bins is None:
        return f"Lhotse dynamic batches of {size}{cap}"
    return f"Lhotse dynamic bucketing: {len(s.duration_bins) + 1} buckets, {size} per batch{cap}"


def build_lhotse_loader(
    cfg: DatasetConfig, augmentor: BatchAugmentor | None, *, sample_rate: int, train: bool, seed: int,
    rank: int = 0, world_size: int = 1, epoch: int = 0,
) -> LhotseLoader:
    """The loader of a ``use_lhotse`` section (``build_dataloader`` dispatches here)."""
    noise = NoiseSource(read_noise(cfg.noise_manifest) if cfg.noise_manifest is not None else None,
                        sample_rate=sample_rate, pool_seconds=cfg.noise_pool_seconds)
    reader = ItemReader(noise, sample_rate=sample_rate, seed=seed, min_audio_len_secs=cfg.min_audio_len_secs,
                        pad_audio_mode=cfg.pad_audio_mode, channel_selector=cfg.channel_selector,
                        augmentor=None if cfg.augment_on_device else augmentor)
    source: CutSpecs | SharBatchStream
    if cfg.cuts_path is not None:
        path = cuts_file(cfg.cuts_path)
        name = f"Lhotse cuts {path}"
        settings = sampler_settings(cfg, cut_metadata(path), name)
        source = CutSpecs(path, settings, seed=seed, rank=rank, world_size=world_size, train=train)
    else:
        assert cfg.shar_path is not None  # DatasetConfig checks that one of the two is set
        shards = shar_shards(cfg.shar_path, world_size)
        folders = cfg.shar_path if isinstance(cfg.shar_path, str) else ", ".join(cfg.shar_path)
        name = f"Lhotse Shar {folders} ({len(shards)} shards)"
        settings = sampler_settings(cfg, shar_metadata(shards), name)
        source = SharBatchStream(shards, reader, settings, seed=seed, rank=rank, world_size=world_size, train=train)
    loader = LhotseLoader(cfg, source, reader, name=name, seed=seed, rank=rank, train=train,
                          device_augmentor=augmentor if cfg.augment_on_device else None)
    loader.set_epoch(epoch)
    return loader
