"""Everything a training step needs, built from a recipe: the model on its device, its DDP
wrapper, optimizer, scheduler, gradient scaler and precision, and how the encoder blocks run
(compiled, activation-checkpointed).

``nestkit train`` and ``nestkit bench`` both build through here and both run
:class:`nestkit.train.step.StepRunner`, so a benchmark times the very step that training runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nestkit.contracts import BLOCKS, EncoderModel, lacking
from nestkit.errors import NestkitError, RecipeError, combined
from nestkit.models.encoder_blocks import checkpoint_encoder_layers, compile_encoder_layers, encoder_blocks

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
_PRECISION_NAMES = {"32": "32", "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed", "16": "16-mixed", "16-mixed": "16-mixed"}

# Where the block options come from, for error messages: recipe keys (train) or flags (bench).
RECIPE_KEYS = {"compile": "trainer.compile", "activation_checkpointing": "trainer.activation_checkpointing"}


def normalise_precision(value: Any) -> str:
    """Lightning-style precision name: ``32``, ``bf16-mixed`` or ``16-mixed``."""
    try:
        return _PRECISION_NAMES[str(value)]
    except KeyError:
        raise NestkitError(f"precision must be one of {', '.join(PRECISIONS)}; got '{value}'") from None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a precision (the model keeps its preprocessor and quantizer in
    float32 itself)."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def check_precision(device: torch.device, precision: str) -> None:
    if precision == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise NestkitError("precision bf16-mixed: this GPU has no bfloat16 support (use 16-mixed)")


@dataclass
class TrainingParts:
    """The pieces of a training step. ``module`` is what the step calls (the DDP wrapper on
    several ranks); ``model`` is the bare model (state dicts, validation, extraction)."""

    model: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    scaler: torch.amp.GradScaler | None
    device: torch.device
    precision: str
    distributed: bool = False
    compiled_layers: int = 0
    checkpointed_layers: int = 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.device, self.precision)


def encoder_name(recipe: Any) -> str:
    """The registry name of a recipe's encoder (empty when its model has no encoder section)."""
    return str((recipe.data["model"].get("encoder") or {}).get("name", ""))


def check_block_options(
    model: nn.Module, *, compile: bool | None, activation_checkpointing: int, names: Mapping[str, str] = RECIPE_KEYS,
    encoder: str = "", source: str = "",
) -> None:
    """One line per option that needs encoder blocks (:class:`nestkit.contracts.BlockEncoder`)
    the model's encoder (registry name ``encoder``) does not have, naming the recipe file
    ``source``; ``nestkit validate`` checks this on the model it builds."""
    if encoder_blocks(model):
        return
    owner, part = ("encoder", model.encoder) if isinstance(model, EncoderModel) else ("model", model)
    label = f"encoder {encoder}" if encoder else f"{owner} {type(part).__name__}"
    asked = (("activation_checkpointing", activation_checkpointing, "activation checkpointing", "0"), ("compile", compile, "compiling", "false"))
    problems = [lacking(part, BLOCKS, component=label, needed_by=needs, fix=f"set it to {off}", key=names[option])
                for option, value, needs, off in asked if value]
    found = [p for p in problems if p is not None]
    if found:
        raise combined(found).at(source) if source else combined(found)


def configure_blocks(
    parts: TrainingParts, *, compile: bool | None, activation_checkpointing: int, names: Mapping[str, str] = RECIPE_KEYS,
    encoder: str = "", source: str = "",
) -> None:
    """Checkpoint and/or compile the encoder blocks in place (parameter names do not change).

    ``compile=None`` compiles on CUDA only, and a compiler failure then falls back to eager."""
    model = parts.model
    check_block_options(model, compile=compile, activation_checkpointing=activation_checkpointing, names=names, encoder=encoder,
                        source=source)
    if activation_checkpointing:
        parts.checkpointed_layers = checkpoint_encoder_layers(model, activation_checkpointing)
    if compile or (compile is None and parts.device.type == "cuda"):
        parts.compiled_layers = compile_encoder_layers(model)
        if compile is None:  # not asked for: a compiler failure falls back to eager, with a warning
            from torch._dynamo import config as dynamo_config

            dynamo_config.suppress_errors = True


def build_parts(
    recipe: Any,
    *,
    device: torch.device,
    model: nn.Module | None = None,
    precision: Any = None,
    scheduler_steps: int | None = None,
    distributed: bool = False,
    sync_batchnorm: bool = False,
) -> TrainingParts:
    """Model (built from ``recipe`` unless given), optimizer, scheduler and scaler on ``device``.

    Call :func:`configure_blocks` next (before :func:`wrap_distributed`) for compiled or
    checkpointed encoder blocks."""
    precision = normalise_precision(recipe.trainer.precision if precision is None else precision)
    check_precision(device, precision)
    model = (model if model is not None else recipe.build_model()).to(device)
    if distributed and sync_batchnorm and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if recipe.optimizer_section is None:
        raise RecipeError("no optimizer: add model.optim with name: adamw (or adam, sgd)", key="model.optim")
    optimizer = recipe.registry.build("optimizer", recipe.optimizer_section, key="model.optim", params=list(model.named_parameters()))
    scheduler = None
    if recipe.scheduler_section is not None:  # a setting it refuses is one line (nestkit.plugin_errors)
        scheduler = recipe.registry.build("scheduler", recipe.scheduler_section, key="model.optim.sched",
                                          optimizer=optimizer, trainer_max_steps=scheduler_steps)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    return TrainingParts(model, model, optimizer, scheduler, scaler, device, precision, distributed=distributed)


def wrap_distributed(parts: TrainingParts, find_unused_parameters: bool = False) -> None:
    """Wrap the model in DistributedDataParallel when this is one rank of several."""
    if not parts.distributed:
        return
    from torch.nn.parallel import DistributedDataParallel as DDP

    parts.module = DDP(
        parts.model,
        device_ids=[parts.device.index] if parts.device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )
