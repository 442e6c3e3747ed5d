"""nestkit: typed, plugin-based self-supervised speech pretraining.

Public API (kept import-light: torch loads only when a model is built)::

    recipe = nestkit.load_recipe("recipes/nest_fast_conformer.yaml", ["trainer.max_steps=10"])
    nestkit.list_components("encoder")          # what is installed
    encoder = nestkit.build("encoder", {"name": "fast_conformer", "feat_in": 80, ...})
    model = nestkit.build_model(recipe)         # built from the registry the recipe was validated with
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nestkit import registry
from nestkit.contracts import (
    BatchAugmentor,
    BlockEncoder,
    Decoder,
    Encoder,
    EncoderModel,
    FeatureAugmentor,
    LayeredEncoder,
    Loss,
    Masking,
    Model,
    Optimizer,
    Preprocessor,
    Quantizer,
    Scheduler,
    SubsamplingEncoder,
)
from nestkit.errors import NestkitError, RecipeError
from nestkit.hookspecs import hookimpl
from nestkit.lazy import lazy_attributes
from nestkit.registry import Component, ComponentConfig, PluginFailure, Registry, section_field

if TYPE_CHECKING:
    from pathlib import Path

    from nestkit.components.loss import MaskedTokenLoss, MLMConfig, MultiMLMConfig
    from nestkit.data.batch import AudioBatch
    from nestkit.pretrained import Pretrained, PretrainedEncoder
    from nestkit.recipe import Recipe

__version__ = "0.1.0"
__all__ = [
    # the contracts a plugin's components implement (nestkit.contracts), and what they use
    "AudioBatch", "BatchAugmentor", "BlockEncoder", "Decoder", "Encoder", "EncoderModel", "FeatureAugmentor",
    "LayeredEncoder", "Loss", "MLMConfig", "MaskedTokenLoss", "Masking", "Model", "MultiMLMConfig", "Optimizer",
    "Preprocessor", "Quantizer", "Scheduler", "SubsamplingEncoder",
    "Component",
    "ComponentConfig",
    "NestkitError",
    "RecipeError",
    "Registry",
    "build",
    "build_model",
    "hookimpl",
    "list_components",
    "load_encoder",
    "load_model",
    "load_recipe",
    "plugin_failures",
    "probe",
    "registry",
    "section_field",
]


def _installed() -> Registry:
    from nestkit.plugins import get_registry

    return get_registry()


def load_recipe(
    path: str | Path | dict[str, Any], overrides: tuple[str, ...] | list[str] | str = (), registry: Registry | None = None
) -> Recipe:
    """Load, resolve (extends, overrides, ``${...}``) and validate a recipe against ``registry``
    (default: the installed plugins); the recipe keeps that registry for building."""
    from nestkit.recipe import load_recipe as _load

    return _load(path, overrides, registry=registry)


def build(kind: str, section: dict[str, Any], *, registry: Registry | None = None, **context: Any) -> Any:
    """Build the component described by ``section`` (``{"name": ..., **fields}``) of ``kind`` from
    ``registry`` (default: the installed plugins); ``context`` goes to its factory."""
    return (registry if registry is not None else _installed()).build(kind, section, key=kind, **context)


def build_model(recipe: Recipe | str | Path | dict[str, Any], overrides: tuple[str, ...] | list[str] | str = ()) -> Any:
    """The recipe's model (a ``torch.nn.Module``) from a recipe object, path or mapping, built from
    the registry the recipe was validated with."""
    from nestkit.recipe import Recipe as _Recipe

    if not isinstance(recipe, _Recipe):
        recipe = load_recipe(recipe, overrides)
    return recipe.build_model()


def list_components(kind: str | None = None) -> list[Component]:
    """Every installed component (optionally of one kind), with its provider."""
    registry = _installed()
    if kind is not None:
        registry.require_kind(kind)
    return [c for c in registry if kind is None or c.kind == kind]


def plugin_failures() -> list[PluginFailure]:
    """The installed plugins that failed to import or to register (each registered nothing), with
    their one-line errors: what the warning lines of the ``nestkit`` command say."""
    return list(_installed().failures)


def probe(checkpoint: str | Path, manifest: str | list[str], label: str, **options: Any) -> dict[str, Any]:
    """``nestkit probe`` in Python: per-layer linear-probe accuracy on manifest key ``label``, with
    the log-mel and random-init baselines, as probe.json's structure (options: folds=5,
    layers="all", out=None, seed=0, l2, device, batch_seconds, progress; see nestkit.probing)."""
    from nestkit.probing.run import run_probe

    return run_probe(checkpoint, manifest, label, **options).result


def load_model(checkpoint: str | Path, device: str = "cpu") -> Pretrained:
    """``(model, recipe)`` from a nestkit checkpoint (training, or ``import-nemo``): the model in
    eval mode on ``device``; ``model.extract(audio, audio_len)`` gives (B, d_model, T') features."""
    from nestkit.pretrained import load_model as _load

    return _load(checkpoint, device)


def load_encoder(path: str | Path, device: str = "cpu") -> PretrainedEncoder:
    """``(encoder, preprocessor)`` from a file of ``nestkit export-encoder``, both in eval mode:
    ``encoder(*preprocessor(audio, audio_len))`` gives (B, d_model, T') features."""
    from nestkit.pretrained import load_encoder as _load

    return _load(path, device)


# Public names whose modules import torch: loaded on first use, so `import nestkit` stays light.
_LAZY = {
    "AudioBatch": "nestkit.data.batch",
    "MaskedTokenLoss": "nestkit.components.loss",
    "MLMConfig": "nestkit.components.loss",
    "MultiMLMConfig": "nestkit.components.loss",
}


__getattr__ = lazy_attributes(__name__, _LAZY)
