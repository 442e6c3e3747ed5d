"""nestkit's built-in plugin: registered through the ``nestkit`` entry point like any other.

Each module listed here exposes ``components() -> list[Component]``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nestkit.hookspecs import hookimpl
from nestkit.registry import Component

BUILTIN_MODULES: tuple[str, ...] = (
    "nestkit.components.preprocessor",
    "nestkit.components.conformer",
    "nestkit.components.masking",
    "nestkit.components.quantizer",
    "nestkit.components.decoder",
    "nestkit.components.loss",
    "nestkit.models.nest",
    "nestkit.components.augmentors",
    "nestkit.components.optim",
)


@hookimpl
def nestkit_register_components(register: Callable[[Component], None]) -> None:
    for module_name in BUILTIN_MODULES:
        for component in importlib.import_module(module_name).components():
            register(component)


# What `nestkit check-plugin nestkit` builds where the defaults (with nestkit.testing's small
# sizes) would not do: the model needs its sections, the noise augmentors default to doing nothing.
_CHECK_SECTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("model", "nest"): {
        "name": "nest", "num_classes": 16, "code_dim": 8,
        "preprocessor": {"name": "mel_spectrogram", "features": 16},
        "masking": {"name": "random_block", "feat_in": 16, "block_size": 8, "allow_overlap": True},
        "quantizer": {"name": "random_projection", "feat_in": 16, "code_dim": 8, "num_classes": 16, "combine_time_steps": 4},
        "encoder": {"name": "fast_conformer", "feat_in": 16, "n_layers": 2, "d_model": 32, "n_heads": 2,
                    "subsampling_factor": 4, "subsampling_conv_channels": 8, "conv_kernel_size": 5},
        "decoder": {"name": "multi_softmax", "feat_in": 32, "num_classes": 16},
        "loss": {"name": "mlm", "combine_time_steps": 4},
    },
    ("augmentor", "speaker_noise"): {"name": "speaker_noise", "prob": 1.0, "noise_ratio": 0.5},
    ("augmentor", "multi_speaker_noise"): {"name": "multi_speaker_noise", "prob": 1.0, "noise_ratio": 0.5},
}


@hookimpl
def nestkit_check_section(kind: str, name: str, workdir: Path) -> dict[str, Any] | None:
    return _CHECK_SECTIONS.get((kind, name))
