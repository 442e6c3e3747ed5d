"""Recipe checks that look at the training data too: warnings, not errors (the recipe is valid).

``nestkit validate`` prints each as one ``warning:`` line: a manifest that does not exist here,
and a mask block longer than the shortest utterance the recipe trains on. With ``allow_overlap: true`` (NEST's setting) a block
starts only where it fits whole, so an utterance shorter than one block is never masked and
teaches nothing; without overlap the block shrinks to fit and every utterance is masked.
"""

from __future__ import annotations

import numpy as np

from nestkit.errors import DataError
from nestkit.recipe import Recipe


def _section(recipe: Recipe, key: str, name: str, config: type) -> object | None:
    """The built-in component config of ``model.<key>`` when it is ``name``, else None."""
    section = dict(recipe.data["model"].get(key) or {})
    if str(section.pop("name", "")).rpartition(":")[2] != name:
        return None
    return config(**section)


def _training_durations(recipe: Recipe) -> tuple[np.ndarray, str] | None:
    """Durations (s) of the utterances the recipe trains on and where they come from; None when
    the manifest cannot be read (validate does not need data)."""
    from nestkit.data import demo_manifests
    from nestkit.data.manifest import read_manifest

    ds = recipe.train_ds
    if ds is None or ds.use_lhotse:  # Lhotse cuts are read lazily, never all at once
        return None
    source = ds.manifest_filepath if ds.manifest_filepath is not None else str(demo_manifests()[0])
    try:
        manifest = read_manifest(source, min_duration=ds.min_duration, max_duration=ds.max_duration, resolve_paths=False)
    except DataError:
        return None
    label = source if isinstance(source, str) else ",".join(source)
    return np.asarray(manifest.durations, dtype=np.float64), label


def unmaskable_utterances(recipe: Recipe) -> str | None:
    """One warning line when ``model.masking.block_size`` is longer than the shortest utterance
    allowed by ``model.train_ds.min_duration`` (or, with no minimum, found in the manifest), with
    the share of training audio that can never be masked when the manifest is readable."""
    from nestkit.components.masking import RandomBlockMaskingConfig
    from nestkit.components.preprocessor import MelSpectrogramConfig

    masking = _section(recipe, "masking", "random_block", RandomBlockMaskingConfig)
    features = _section(recipe, "preprocessor", "mel_spectrogram", MelSpectrogramConfig)
    if masking is None or features is None or not masking.allow_overlap or recipe.train_ds is None:
        return None
    model = recipe.data["model"]
    rate = features.sample_rate
    hop = features.n_window_stride or int(features.window_stride * rate)  # samples per feature frame
    block, frames_per_step = masking.block_size, 1
    if model.get("mask_position") == "post_conv":  # blocks of subsampled frames, as NEST builds them
        frames_per_step = int(model["encoder"].get("subsampling_factor", 8))
        block = max(1, block // frames_per_step)
    # The fewest feature frames whose (subsampled) length holds one block (dw_striding rounds up).
    needed = (block - 1) * frames_per_step + 1
    threshold = needed * hop / rate  # seconds
    data = _training_durations(recipe)
    min_duration = recipe.train_ds.min_duration
    shortest = min_duration if min_duration is not None else (float(data[0].min()) if data else None)
    if shortest is None or shortest >= threshold:
        return None
    than = (f"model.train_ds.min_duration ({min_duration:g} s)" if min_duration is not None
            else f"the shortest training utterance ({shortest:.2f} s; model.train_ds.min_duration is unset)")
    line = (f"model.masking.block_size ({masking.block_size} frames = {threshold:.2f} s) is longer than {than}: "
            f"utterances under {threshold:.2f} s are never masked")
    if data is not None:
        durations, label = data
        frames = np.floor(durations * rate).astype(np.int64) // hop
        share = float(durations[frames < needed].sum() / max(durations.sum(), 1e-9))
        line += f" ({share:.1%} of the training audio in {label})"
    return line + "; lower the block or raise min_duration"


def missing_data_files(recipe: Recipe) -> list[str]:
    """A line per manifest or noise manifest the recipe names that does not exist here (a recipe
    may be validated on one machine for another, so this warns; training stops on it)."""
    return [f"model.{split}.{key}: no such file here: {', '.join(paths)}"
            for split, ds in (("train_ds", recipe.train_ds), ("validation_ds", recipe.validation_ds)) if ds is not None
            for key, paths in ds.missing_files().items()]


def recipe_warnings(recipe: Recipe) -> list[str]:
    """Every warning for ``recipe``, one line each."""
    return [*missing_data_files(recipe), *(line for line in (unmaskable_utterances(recipe),) if line)]
