"""The ``model.train_ds`` / ``model.validation_ds`` sections (NeMo's key names plus ours)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nestkit.data.lhotse_keys import lhotse_problem, nemo_only_keys


class DatasetConfig(BaseModel):
    """One data split: manifests, noise, batching and augmentation."""

    model_config = ConfigDict(extra="forbid")

    manifest_filepath: str | list[str] | None = Field(None, description="NeMo JSON-lines manifest(s); null: the bundled demo data")
    noise_manifest: str | list[str] | None = Field(None, description="manifest of noise clips, or with use_lhotse a Lhotse noise CutSet (null: no noise)")
    sample_rate: int = Field(16000, gt=0)
    batch_size: int = Field(8, ge=1, description="utterances per batch (plain sampler; with use_lhotse, a cap when given)")
    batch_duration: float | None = Field(None, gt=0, description="seconds of audio per batch: enables the duration-bucketed sampler (use_lhotse: Lhotse's max_duration)")
    num_buckets: int = Field(10, ge=1, description="duration buckets of the bucketed sampler")
    shuffle: bool = True
    num_workers: int = Field(0, ge=0, description="loader worker processes (at most the usable CPUs are started)")
    pin_memory: bool = Field(False, description="pin batches for fast copies to the GPU (ignored without one)")
    multiprocessing_context: Literal["fork", "spawn", "forkserver"] | None = Field(
        None, description="start method of the loader workers (null: the platform's default; spawn: Windows/macOS)"
    )
    max_duration: float | None = Field(None, gt=0)
    min_duration: float | None = Field(None, ge=0)
    drop_last: bool = False
    min_audio_len_secs: float = Field(0.0, ge=0, description="shorter utterances are padded up to this")
    pad_audio_mode: Literal["repeat", "zero"] = "repeat"
    channel_selector: int | None = Field(None, ge=0, description="pick one channel instead of down-mixing")
    is_tarred: bool = False
    tarred_audio_filepaths: str | list[str] | None = None
    shuffle_n: int | None = Field(2048, ge=0, description="shuffle buffer of tarred datasets (null: none, as Lhotse data needs)")
    noise_pool_seconds: float = Field(600.0, ge=0, description="decoded noise kept in memory")
    batch_augmentor: dict[str, Any] | None = Field(
        None, description="an augmentor section (name: ...)", json_schema_extra={"nestkit_kind": "augmentor"}
    )
    augment_on_device: bool = Field(False, description="run the batch augmentor on the training device instead of in the loader")
    max_skipped_items: int | None = Field(None, ge=0, description="fail when more items than this are unusable (null: never)")
    use_start_end_token: Literal[False] = Field(False, description="NeMo key for transcripts; pretraining reads none, so only false")
    trim_silence: Literal[False] = Field(False, description="NeMo key; nestkit does not trim silence, so only false")
    seed: int | None = Field(None, description="seed of this loader's shuffling, noise and mixing (null: trainer.seed)")
    # Lhotse data (NeMo's LhotseDataLoadingConfig names; nestkit.data.lhotse reads them)
    use_lhotse: bool = Field(False, description="read cuts_path or shar_path with Lhotse's samplers (needs nestkit[lhotse])")
    cuts_path: str | None = Field(None, description="Lhotse CutSet manifest (.jsonl or .jsonl.gz), read lazily")
    shar_path: str | list[str] | None = Field(None, description="Lhotse Shar directory (or several): shards are dealt to ranks and loader workers")
    use_bucketing: bool = Field(True, description="Lhotse DynamicBucketingSampler (false: DynamicCutSampler; NeMo's default is false)")
    quadratic_duration: float | None = Field(None, gt=0, description="Lhotse: a cut of d seconds counts d + d*d/quadratic_duration")
    bucket_duration_bins: list[float] | None = Field(None, description="Lhotse bucket boundaries in seconds (null: estimated from the first cuts)")
    num_cuts_for_bins_estimate: int = Field(10000, ge=1, description="Lhotse: cuts read to estimate the bucket boundaries")
    bucket_buffer_size: int = Field(10000, ge=1, description="Lhotse: cuts held in the buckets (from Shar, with their audio)")
    shuffle_buffer_size: int = Field(10000, ge=0, description="Lhotse: shuffle buffer (with bucketing added to bucket_buffer_size, as Lhotse does)")

    @model_validator(mode="before")
    @classmethod
    def _nemo_only(cls, data: Any) -> Any:
        problem = nemo_only_keys(data)
        if problem:
            raise ValueError(problem)
        return data

    @model_validator(mode="after")
    def _duration_range(self) -> DatasetConfig:
        if self.min_duration is not None and self.max_duration is not None and self.min_duration > self.max_duration:
            raise ValueError(f"min_duration ({self.min_duration}) exceeds max_duration ({self.max_duration}): no utterance could pass")
        problem = lhotse_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def has_data(self) -> bool:
        """Whether the section names its data (a manifest, or Lhotse cuts or Shar)."""
        return self.manifest_filepath is not None or self.use_lhotse

    def missing_files(self) -> dict[str, list[str]]:
        """The manifests this section names that do not exist here, by key (``noise_manifest``: [...])."""
        from nestkit.data.manifest import split_paths

        named = {"manifest_filepath": self.manifest_filepath, "noise_manifest": self.noise_manifest}
        missing = {key: [str(p) for p in split_paths(value) if not p.exists()] for key, value in named.items() if value}
        return {key: paths for key, paths in missing.items() if paths}
