"""NeMo interop: state dicts under NeMo's key names and recipes from NeMo model configs.

nestkit keeps NeMo's parameter names except in four places, converted here both ways:
``preprocessor.featurizer.{window,fb}`` (nestkit: ``preprocessor.{window,fb}``), the fused
attention projection ``self_attn.qkv`` (NeMo: ``linear_q``/``linear_k``/``linear_v``), the
mask embedding under ``mask_processor`` (nestkit: ``masking``), and the decoder, a Linear in
nestkit and a kernel-1 Conv1d ``decoder.decoder_layers.0`` in NeMo.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from nestkit.errors import CheckpointError, RecipeError

_QKV = re.compile(r"^(.*\.self_attn\.)qkv\.(weight|bias)$")
_QKV_NEMO = re.compile(r"^(.*\.self_attn\.)linear_([qkv])\.(weight|bias)$")
_RENAMES = {  # nestkit prefix -> NeMo prefix
    "preprocessor.window": "preprocessor.featurizer.window",
    "preprocessor.fb": "preprocessor.featurizer.fb",
    "masking.mask_embedding": "mask_processor.mask_embedding",
    "decoder.proj.weight": "decoder.decoder_layers.0.weight",
    "decoder.proj.bias": "decoder.decoder_layers.0.bias",
}
_RENAMES_BACK = {v: k for k, v in _RENAMES.items()}


def nemo_tensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """nestkit-named tensors (a state dict, or gradients by parameter name) under NeMo's names."""
    out: dict[str, Tensor] = {}
    for key, value in tensors.items():
        match = _QKV.match(key)
        if match:
            prefix, kind = match.groups()
            if kind == "bias" and f"{prefix}qkv.weight" in tensors:
                continue  # emitted next to the weight, in NeMo's order
            parts = {kind: value.chunk(3, dim=0)}
            if kind == "weight" and f"{prefix}qkv.bias" in tensors:
                parts["bias"] = tensors[f"{prefix}qkv.bias"].chunk(3, dim=0)
            for i, name in enumerate("qkv"):
                for part_kind, chunks in parts.items():
                    out[f"{prefix}linear_{name}.{part_kind}"] = chunks[i].clone()
        elif key == "decoder.proj.weight":
            out[_RENAMES[key]] = value.unsqueeze(-1)
        else:
            out[_RENAMES.get(key, key)] = value
    return out


def from_nemo_tensors(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A NeMo state dict under nestkit's names (QKV fused)."""
    out: dict[str, Tensor] = {}
    pending: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        match = _QKV_NEMO.match(key)
        if match:
            prefix, which, kind = match.groups()
            pending.setdefault((prefix, kind), {})[which] = value
            if len(pending[(prefix, kind)]) == 3:
                parts = pending.pop((prefix, kind))
                out[f"{prefix}qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        elif key == "decoder.decoder_layers.0.weight":
            out[_RENAMES_BACK[key]] = value.squeeze(-1)
        else:
            out[_RENAMES_BACK.get(key, key)] = value
    if pending:
        (prefix, kind), parts = next(iter(pending.items()))
        missing = sorted(set("qkv") - set(parts))
        raise CheckpointError(f"NeMo state dict has {prefix}linear_{'/'.join(sorted(parts))}.{kind} but not linear_{'/'.join(missing)}")
    return out


def to_nemo_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict with NeMo's keys, shapes and dtypes (loadable by NeMo's NEST model)."""
    return nemo_tensors(model.state_dict())


def load_nemo_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load a NeMo NEST state dict into ``model`` exactly: every key and shape must match."""
    converted = from_nemo_tensors(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in converted]
    unexpected = [k for k in converted if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {nemo_tensors({missing[0]: own[missing[0]]}).popitem()[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise CheckpointError("NeMo state dict does not fit this model: " + "; ".join(parts))
    for key, value in converted.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"NeMo state dict: {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}")
    model.load_state_dict(converted, strict=True)


# ---------------------------------------------------------------------------- configs

_TARGETS = {
    "AudioToMelSpectrogramPreprocessor": "mel_spectrogram",
    "RandomBlockMasking": "random_block",
    "RandomProjectionVectorQuantizer": "random_projection",
    "ConformerEncoder": "fast_conformer",
    "MultiSoftmaxDecoder": "multi_softmax",
    "MultiMLMLoss": "multi_mlm",
    "MLMLoss": "mlm",
    "MultiSpeakerNoiseAugmentation": "multi_speaker_noise",
    "SpeakerNoiseAugmentation": "speaker_noise",
}
_COMPONENT_KEYS = ("preprocessor", "masking", "quantizer", "encoder", "decoder", "loss")
_MODEL_KEYS = ("sample_rate", "num_classes", "num_books", "code_dim", "squeeze_single", "mask_position")
_SCHEDULERS = {"NoamAnnealing": "noam", "CosineAnnealing": "cosine_annealing"}


def _named(section: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A NeMo ``_target_`` section as a nestkit ``name:`` section."""
    section = dict(section)
    target = str(section.pop("_target_", ""))
    if "name" in section:
        return section
    short = target.rpartition(".")[2]
    if short not in _TARGETS:
        raise RecipeError(f"no nestkit component for NeMo class '{target}'", key=key)
    return {"name": _TARGETS[short], **section}


def _dataset(section: Mapping[str, Any]) -> dict[str, Any]:
    from nestkit.data.config import DatasetConfig

    out = {k: (None if v == "???" else v) for k, v in section.items() if k in DatasetConfig.model_fields}
    if isinstance(out.get("batch_augmentor"), Mapping):
        out["batch_augmentor"] = _named(out["batch_augmentor"], "model.train_ds.batch_augmentor")
    return out


def recipe_from_nemo_config(cfg: Mapping[str, Any] | str) -> dict[str, Any]:
    """A nestkit recipe mapping from a NeMo NEST config: a full config (``name``/``model``/...)
    or only its ``model`` section, as a dict or YAML text. ``_target_`` becomes ``name:``,
    ``${...}`` references are resolved, dataset keys nestkit does not use are dropped, and an
    unused ``spec_augment`` (no masks) is dropped."""
    from nestkit.recipe import interpolate

    data = yaml.safe_load(cfg) if isinstance(cfg, str) else copy.deepcopy(dict(cfg))
    if not isinstance(data, Mapping):
        raise RecipeError("a NeMo config must be a mapping")
    full = dict(data) if "model" in data else {"model": dict(data)}
    full = interpolate(full)
    model_in: dict[str, Any] = dict(full["model"])
    model: dict[str, Any] = {"name": "nest"}
    for key in _MODEL_KEYS:
        if key in model_in:
            model[key] = model_in[key]
    for key in _COMPONENT_KEYS:
        if key not in model_in:
            raise RecipeError("NeMo config has no such section", key=f"model.{key}")
        model[key] = _named(model_in[key], f"model.{key}")
    spec = model_in.get("spec_augment")
    if isinstance(spec, Mapping) and (spec.get("freq_masks", 0) or spec.get("time_masks", 0)):
        raise RecipeError("NEST does not use SpecAugment; set freq_masks and time_masks to 0", key="model.spec_augment")
    for key in ("train_ds", "validation_ds"):
        if isinstance(model_in.get(key), Mapping):
            model[key] = _dataset(model_in[key])
    optim = model_in.get("optim")
    if isinstance(optim, Mapping):
        optim = dict(optim)
        sched = optim.get("sched")
        if isinstance(sched, Mapping):
            sched = {k: v for k, v in sched.items() if v is not None or k != "warmup_ratio"}
            sched["name"] = _SCHEDULERS.get(str(sched.get("name")), sched.get("name"))
            optim["sched"] = sched
        model["optim"] = optim
    recipe: dict[str, Any] = {"name": full.get("name", "nest"), "model": model}
    return recipe


_NEMO_CLASSES = {
    "mel_spectrogram": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
    "random_block": "nemo.collections.asr.modules.RandomBlockMasking",
    "random_projection": "nemo.collections.asr.modules.RandomProjectionVectorQuantizer",
    "fast_conformer": "nemo.collections.asr.modules.ConformerEncoder",
    "multi_softmax": "nemo.collections.asr.modules.MultiSoftmaxDecoder",
    "multi_mlm": "nemo.collections.asr.losses.MultiMLMLoss",
    "mlm": "nemo.collections.asr.losses.MLMLoss",
    "multi_speaker_noise": "nemo.collections.asr.modules.ssl_modules.MultiSpeakerNoiseAugmentation",
    "speaker_noise": "nemo.collections.asr.modules.ssl_modules.SpeakerNoiseAugmentation",
}
NEMO_MODEL_CLASS = "nemo.collections.asr.models.ssl_models.EncDecDenoiseMaskedTokenPredModel"
_UNUSED_SPEC_AUGMENT = {
    "_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
    "freq_masks": 0,
    "time_masks": 0,
    "freq_width": 27,
    "time_width": 0.05,
}


def _targeted(section: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A nestkit ``name:`` section as a NeMo ``_target_`` section."""
    section = dict(section)
    name = str(section.pop("name", "")).rpartition(":")[2]
    if name not in _NEMO_CLASSES:
        raise RecipeError(f"component '{name}' has no NeMo equivalent", key=key)
    return {"_target_": _NEMO_CLASSES[name], **section}


def nemo_config_from_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """NeMo's ``model`` config (as a ``.nemo`` archive stores it) for a resolved nestkit recipe.

    The inverse of :func:`recipe_from_nemo_config` for the model section: ``name:`` becomes
    ``_target_`` with NeMo's class path, the scheduler gets NeMo's class name, and NeMo's
    unused ``spec_augment`` section (required by its constructor) is added.
    """
    model_in = dict(recipe["model"])
    model: dict[str, Any] = {"target": NEMO_MODEL_CLASS}
    for key in _MODEL_KEYS:
        if key in model_in:
            model[key] = model_in[key]
    for key in ("train_ds", "validation_ds"):
        if isinstance(model_in.get(key), Mapping):
            dataset = dict(model_in[key])
            if isinstance(dataset.get("batch_augmentor"), Mapping):
                dataset["batch_augmentor"] = _targeted(dataset["batch_augmentor"], f"model.{key}.batch_augmentor")
            model[key] = dataset
    for key in _COMPONENT_KEYS:
        model[key] = _targeted(model_in[key], f"model.{key}")
        if key == "preprocessor":
            model["spec_augment"] = dict(_UNUSED_SPEC_AUGMENT)
    optim = model_in.get("optim")
    if isinstance(optim, Mapping):
        optim = copy.deepcopy(dict(optim))
        sched = optim.get("sched")
        if isinstance(sched, Mapping):
            back = {v: k for k, v in _SCHEDULERS.items()}
            optim["sched"] = {**sched, "name": back.get(str(sched.get("name")), sched.get("name"))}
        model["optim"] = optim
    return model
