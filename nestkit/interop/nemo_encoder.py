"""Continued pretraining from the encoder of any NeMo ASR model (``import-nemo --encoder-only``).

The archive's ``encoder`` (a ConformerEncoder) and ``preprocessor`` (the features that encoder
was trained on) replace those sections of a NEST recipe, by default the bundled NEST-L recipe;
every other part (masking, quantizer, decoder, loss, data, optimizer) keeps the recipe's values
and starts fresh. The encoder's weights and the preprocessor's buffers come from the archive.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nestkit.errors import CheckpointError, NestkitError
from nestkit.interop.nemo_archive import Imported, model_class, read_nemo_archive, write_imported

BASE_RECIPE = "nest_fast_conformer.yaml"
_TAKEN = ("sample_rate", "preprocessor", "encoder")
_METADATA = ("target", "_target_", "nemo_version")


def _base(path: str | Path | None) -> Path:
    from nestkit.recipe import bundled_recipe

    if path is not None:
        return Path(path)
    bundled = bundled_recipe(BASE_RECIPE)
    if bundled is None:
        raise CheckpointError(f"the bundled recipe nestkit:{BASE_RECIPE} is missing from this install; pass a NEST recipe with --recipe")
    return bundled


def encoder_recipe(config: Mapping[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """A raw NEST recipe with the archive's encoder, preprocessor and sample rate put in."""
    from nestkit.interop.nemo import nestkit_section
    from nestkit.recipe import interpolate

    for key in ("encoder", "preprocessor"):
        if not isinstance(config.get(key), Mapping):
            raise CheckpointError(f"the archive's model config has no '{key}' section")
    taken = interpolate({"model": {k: config[k] for k in _TAKEN if k in config}})["model"]
    model = raw.setdefault("model", {})
    model["encoder"] = nestkit_section(taken["encoder"], "model.encoder")
    model["preprocessor"] = nestkit_section(taken["preprocessor"], "model.preprocessor")
    if "sample_rate" in taken:
        model["sample_rate"] = taken["sample_rate"]
    return raw


def import_encoder(archive: str | Path, config: dict[str, Any], state: dict[str, Any], out: str | Path,
                   base_recipe: str | Path | None = None) -> Imported:
    """A model-only NEST checkpoint whose encoder (and preprocessor) come from ``archive``."""
    from nestkit.interop.nemo import load_nemo_encoder
    from nestkit.recipe import load_raw, load_recipe

    base = _base(base_recipe)
    raw = load_raw(base)
    cls = model_class(config) or "NeMo"
    try:
        recipe = load_recipe(encoder_recipe(config, raw))
    except NestkitError as err:
        raise CheckpointError(f"{archive}: its encoder cannot start a NEST run ({err})") from None
    model = recipe.build_model()
    try:
        left = load_nemo_encoder(model, state)
    except CheckpointError as err:
        raise CheckpointError(f"{archive}: {err}") from None
    encoder_tensors = sum(1 for k in state if k.startswith("encoder."))
    notes = [f"encoder ({encoder_tensors} tensors) and preprocessor from the {cls} archive; masking, quantizer, "
             f"decoder, loss, data and optimizer from {base.name}, freshly initialised"]
    notes += [f"model.{key} not imported (--encoder-only)" for key in config if key not in (*_TAKEN, *_METADATA)]
    notes += [f"{n} tensors under {prefix}.* not imported (--encoder-only)" for prefix, n in left.items()]
    return write_imported(out, model, recipe, archive, notes)


def import_nemo_encoder(archive: str | Path, out: str | Path, base_recipe: str | Path | None = None) -> Imported:
    """``import-nemo --encoder-only``: the archive's encoder and preprocessor in a NEST recipe."""
    config, state = read_nemo_archive(archive)
    return import_encoder(archive, config, state, out, base_recipe)
