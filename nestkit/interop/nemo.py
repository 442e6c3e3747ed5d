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



def load_nemo_encoder(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, int]:
    """Load the ``encoder.*`` weights (and the ``preprocessor.*`` buffers, when there) of any
    NeMo ASR state dict into ``model``: every encoder key and shape must match. Returns how many
    tensors were left out, by top-level prefix (``decoder``, ``joint``, ...)."""
    taken = ("encoder.", "preprocessor.")
    converted = from_nemo_tensors({k: v for k, v in state_dict.items() if k.startswith(taken)})
    own = model.state_dict()
    missing = [k for k in own if k.startswith("encoder.") and k not in converted]
    unexpected = [k for k in converted if k not in own]
    if missing or unexpected:
        first = missing[0] if missing else unexpected[0]
        raise CheckpointError(f"the NeMo encoder does not fit its config: {len(missing)} missing, "
                              f"{len(unexpected)} unexpected (first: {first})")
    for key, value in converted.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"NeMo state dict: {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}")
    model.load_state_dict(converted, strict=False)
    left: dict[str, int] = {}
    for key in state_dict:
        if not key.startswith(taken):
            left[key.partition(".")[0]] = left.get(key.partition(".")[0], 0) + 1
    return left

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
_DATASET_KEYS = ("train_ds", "validation_ds")
_SCHEDULERS = {"NoamAnnealing": "noam", "CosineAnnealing": "cosine_annealing"}
# NeMo's NEST dataset keys that nestkit has no use for, with the values of NeMo's recipe: dropped
# on import (with a note), written back on export so that NeMo finds them where it expects them.
NEMO_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "train_ds": {
        "is_concat": False,
        "concat_sampling_technique": "temperature",
        "concat_sampling_temperature": 1.0,
        "bucketing_strategy": "synced_randomized",
        "bucketing_batch_size": None,
    },
    "validation_ds": {},
}
_UNSET_MEANS = {
    "manifest_filepath": "nestkit trains on its demo data until you set it",
    "noise_manifest": "no noise is mixed in until you set it",
}


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def nestkit_section(section: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A NeMo ``_target_`` section as a nestkit ``name:`` section."""
    section = dict(section)
    target = str(section.pop("_target_", ""))
    if "name" in section:
        return section
    short = target.rpartition(".")[2]
    if short not in _TARGETS:
        raise RecipeError(f"no nestkit component for NeMo class '{target}'", key=key)
    return {"name": _TARGETS[short], **section}


def _dataset(section: Mapping[str, Any], split: str, notes: list[str]) -> dict[str, Any]:
    from nestkit.data.config import DatasetConfig

    out: dict[str, Any] = {}
    for key, value in section.items():
        where = f"model.{split}.{key}"
        if key not in DatasetConfig.model_fields:
            default = NEMO_DATASET_DEFAULTS[split].get(key, value)
            back = f"; export-nemo writes NeMo's {default!r} back" if key in NEMO_DATASET_DEFAULTS[split] else ""
            notes.append(f"{where} has no nestkit equivalent; dropped (was {shown(value)}){back}")
        elif value == "???":
            notes.append(f"{where} is ??? (unset) in NeMo; written as null: {_UNSET_MEANS.get(key, 'set it before training')}")
            out[key] = None
        else:
            out[key] = value
    if isinstance(out.get("batch_augmentor"), Mapping):
        out["batch_augmentor"] = nestkit_section(out["batch_augmentor"], f"model.{split}.batch_augmentor")
    return out


def _masking(section: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    masking = nestkit_section(section, "model.masking")
    if "max_mask_ratio" in masking:
        value = masking.pop("max_mask_ratio")
        notes.append(f"model.masking.max_mask_ratio dropped (was {value!r}): NeMo 3.0.0 accepts it but never applies it, "
                     "while nestkit's caps the masked share")
    return masking


def _spec_augment(spec: Any, notes: list[str]) -> None:
    if spec is None:
        return
    if isinstance(spec, Mapping) and not (spec.get("freq_masks", 0) or spec.get("time_masks", 0)):
        notes.append("model.spec_augment (SpecAugment with no masks, unused by NEST) dropped; export-nemo writes it back")
        return
    raise RecipeError("NEST does not use SpecAugment; set freq_masks and time_masks to 0", key="model.spec_augment")


def recipe_from_nemo_config(cfg: Mapping[str, Any] | str, notes: list[str] | None = None) -> dict[str, Any]:
    """A nestkit recipe mapping from a NeMo NEST config: a full config (``name``/``model``/...)
    or only its ``model`` section, as a dict or YAML text. ``_target_`` becomes ``name:`` and
    ``${...}`` references are resolved. Every key that is dropped or changed on the way gets one
    line in ``notes`` (dataset keys nestkit does not use, ``???`` values, NeMo's unused
    ``spec_augment``); ``trainer`` and ``exp_manager`` are left to the caller."""
    from nestkit.recipe import interpolate

    notes = [] if notes is None else notes
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
        model[key] = _masking(model_in[key], notes) if key == "masking" else nestkit_section(model_in[key], f"model.{key}")
    _spec_augment(model_in.get("spec_augment"), notes)
    for key in _DATASET_KEYS:
        if isinstance(model_in.get(key), Mapping):
            model[key] = _dataset(model_in[key], key, notes)
    if isinstance(model_in.get("optim"), Mapping):
        model["optim"] = copy.deepcopy(dict(model_in["optim"]))
    handled = {*_MODEL_KEYS, *_COMPONENT_KEYS, *_DATASET_KEYS, "spec_augment", "optim"}
    for key, value in model_in.items():
        if key not in handled:
            notes.append(f"model.{key} has no nestkit equivalent; dropped (was {shown(value)})")
    return {"name": full.get("name", "nest"), "model": model}


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


def _nemo_sched(sched: Mapping[str, Any]) -> dict[str, Any]:
    back = {v: k for k, v in _SCHEDULERS.items()}
    name = back.get(str(sched.get("name")), sched.get("name"))
    out = {**sched, "name": name}
    if name in _SCHEDULERS:  # NeMo's recipes spell out both warmup keys
        out.setdefault("warmup_steps", None)
        out.setdefault("warmup_ratio", None)
    return out


def nemo_config_from_recipe(recipe: Mapping[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    """NeMo's ``model`` config (as a ``.nemo`` archive stores it) for a resolved nestkit recipe.

    The inverse of :func:`recipe_from_nemo_config` for the model section: ``name:`` becomes
    ``_target_`` with NeMo's class path, the scheduler gets NeMo's class name, and what import
    drops is written back with NeMo's defaults (its unused ``spec_augment``, the dataset keys of
    ``NEMO_DATASET_DEFAULTS``, both warmup keys). What NeMo would read differently goes to ``notes``.
    """
    notes = [] if notes is None else notes
    model_in = dict(recipe["model"])
    model: dict[str, Any] = {"target": NEMO_MODEL_CLASS}
    for key in _MODEL_KEYS:
        if key in model_in:
            model[key] = model_in[key]
    for key in _DATASET_KEYS:
        if isinstance(model_in.get(key), Mapping):
            dataset = {**dict(model_in[key]), **{k: v for k, v in NEMO_DATASET_DEFAULTS[key].items() if k not in model_in[key]}}
            if isinstance(dataset.get("batch_augmentor"), Mapping):
                dataset["batch_augmentor"] = _targeted(dataset["batch_augmentor"], f"model.{key}.batch_augmentor")
            model[key] = dataset
    for key in _COMPONENT_KEYS:
        model[key] = _targeted(model_in[key], f"model.{key}")
        if key == "preprocessor":
            model["spec_augment"] = dict(_UNUSED_SPEC_AUGMENT)
    if model["masking"].get("max_mask_ratio") is not None:
        notes.append("model.masking.max_mask_ratio is nestkit's cap on the masked share; NeMo 3.0.0 ignores it")
    optim = model_in.get("optim")
    if isinstance(optim, Mapping):
        optim = copy.deepcopy(dict(optim))
        if isinstance(optim.get("sched"), Mapping):
            optim["sched"] = _nemo_sched(optim["sched"])
        model["optim"] = optim
    return model
