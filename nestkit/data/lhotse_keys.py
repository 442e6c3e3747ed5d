"""The Lhotse keys of a dataset section, checked without importing Lhotse.

nestkit reads NeMo's Lhotse data config (``LhotseDataLoadingConfig`` in NeMo's
``nemo/collections/common/data/lhotse/dataloader.py``) under the same key names. The keys it
implements are fields of :class:`~nestkit.data.config.DatasetConfig`; the ones it does not are
listed here with what they do, so a recipe carrying one fails with a line that says so instead of
training without it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nestkit.data.config import DatasetConfig

INSTALL_HINT = 'pip install "nestkit[lhotse]"'

# Fields that only mean something with use_lhotse: true.
LHOTSE_FIELDS = ("cuts_path", "shar_path", "use_bucketing", "quadratic_duration", "bucket_duration_bins",
                 "num_cuts_for_bins_estimate", "bucket_buffer_size", "shuffle_buffer_size")

_SOURCES = "mixes several data sources (give one cuts_path, or shar_path with several Shar directories)"
_TEXT = "a text or transcript option (NEST pretraining reads audio only)"
_AUGMENT = "a NeMo Lhotse augmentation nestkit does not have (noise comes from noise_manifest and batch_augmentor)"
_NEMO_TARRED = "reads NeMo tarred manifests through Lhotse (nestkit reads them with is_tarred: true, without use_lhotse)"
_AIS = "AIStore batch loading"

# NeMo Lhotse keys nestkit does not implement -> what they are (and what to use instead).
NEMO_ONLY: dict[str, str] = {
    **dict.fromkeys(("input_cfg", "multi_config", "sampler_fusion", "sampler_weights", "reweight_temperature",
                     "max_open_streams"), _SOURCES),
    **dict.fromkeys(("pretokenize", "prompt_format", "use_multimodal_sampling", "audio_locator_tag",
                     "token_equivalent_duration", "batch_tokens", "quadratic_factor", "cut_text_into_windows_tokens",
                     "min_tps", "max_tps", "min_tokens", "max_tokens", "measure_total_length", "min_tpt", "max_tpt",
                     "max_cer", "min_context_speaker_similarity", "keep", "text_field", "lang_field"), _TEXT),
    **dict.fromkeys(("noise_path", "noise_snr", "noise_mix_prob", "perturb_speed", "concatenate_samples",
                     "concatenate_gap_seconds", "concatenate_duration_factor", "concatenate_merge_supervisions",
                     "db_norm", "truncate_duration", "truncate_offset_type", "cut_into_windows_duration",
                     "cut_into_windows_hop", "keep_excessive_supervisions", "rir_enabled", "rir_path", "rir_prob",
                     "lowpass_enabled", "lowpass_frequencies_interval", "lowpass_prob", "compression_enabled",
                     "compression_prob", "compression_level_interval", "compression_codecs",
                     "compression_codec_weights", "compression_enable_for_custom_fields", "clipping_enabled",
                     "clipping_gain_db", "clipping_normalize", "clipping_oversampling", "clipping_prob_hard",
                     "clipping_prob"), _AUGMENT),
    **dict.fromkeys(("pad_min_duration", "pad_direction"), "padding to a minimum length (use min_audio_len_secs and pad_audio_mode)"),
    **dict.fromkeys(("bucket_batch_size", "bucketing_2d_strict_mode"), "fixed batch sizes per bucket (use batch_duration)"),
    **dict.fromkeys(("skip_missing_manifest_entries", "tarred_random_access"), _NEMO_TARRED),
    **dict.fromkeys(("ais_batch_prefetch_buffer_size", "use_ais_get_batch"), _AIS),
    "concurrent_bucketing": "a background bucketing thread, which makes batches non-deterministic and unresumable",
    "shard_seed": "the sampler's seed (use seed: nestkit's shuffling and shard order follow it and stay resumable)",
    "slice_length": "reads random slices of shards (nestkit reads every cut once per epoch)",
    "force_finite": "nestkit's Lhotse epochs are finite already",
    "force_map_dataset": "nestkit samples cuts_path in the main process and shar_path in the loader workers",
    "force_iterable_dataset": "nestkit samples cuts_path in the main process and shar_path in the loader workers",
    "metadata_only": "iterates manifests without audio",
    "cuda_expandable_segments": "a CUDA allocator setting, not a data one (set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)",
}


def nemo_only_keys(data: Any) -> str | None:
    """One line naming the NeMo Lhotse keys of a section that nestkit does not implement."""
    if not isinstance(data, Mapping):
        return None
    found = [k for k in data if k in NEMO_ONLY]
    if not found:
        return None
    what = "; ".join(dict.fromkeys(f"{NEMO_ONLY[k]}" for k in found))
    keys = ", ".join(found)
    return f"{keys}: NeMo Lhotse option{'s' if len(found) > 1 else ''} that nestkit does not implement: {what} (remove {'them' if len(found) > 1 else 'it'})"


def lhotse_problem(cfg: DatasetConfig) -> str | None:
    """The first inconsistency between ``use_lhotse`` and the other keys, as one line."""
    if not cfg.use_lhotse:
        given = [k for k in LHOTSE_FIELDS if k in cfg.model_fields_set]
        if given:
            return f"{', '.join(given)} need{'s' if len(given) == 1 else ''} use_lhotse: true"
        if cfg.is_tarred and cfg.tarred_audio_filepaths is None:
            return "is_tarred is true but tarred_audio_filepaths is not set"
        return None
    if (cfg.cuts_path is None) == (cfg.shar_path is None):
        return ("use_lhotse: true reads exactly one of cuts_path (a Lhotse CutSet .jsonl/.jsonl.gz) "
                "or shar_path (Lhotse Shar directories)")
    if cfg.manifest_filepath is not None:
        return ("manifest_filepath is a NeMo manifest; with use_lhotse: true the data comes from cuts_path or shar_path "
                "(or set use_lhotse: false to read the manifest)")
    if cfg.is_tarred or cfg.tarred_audio_filepaths is not None:
        return "NeMo tarred data is read with is_tarred: true and use_lhotse: false; Lhotse's own tar format is shar_path"
    if cfg.shuffle_n is not None and "shuffle_n" in cfg.model_fields_set:
        return ("shuffle_n is the buffer of NeMo tarred data; with use_lhotse: true set shuffle_n: null "
                "(Lhotse's buffer is shuffle_buffer_size)")
    bins = cfg.bucket_duration_bins
    if bins is not None and list(bins) != sorted(bins):
        return f"bucket_duration_bins must be ascending, got {list(bins)}"
    if importlib.util.find_spec("lhotse") is None:  # found without importing it
        return f"use_lhotse: true needs Lhotse, which is not installed ({INSTALL_HINT})"
    return None

