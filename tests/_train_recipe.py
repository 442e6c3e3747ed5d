"""A very small NEST recipe for the end-to-end training tests (seconds per run on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

FEATS, D_MODEL, CLASSES = 40, 32, 32
# The demo prompts are 8 kHz telephone audio: read at their own rate they need no resampling, and
# the 20 ms window is a 256-point FFT. A tiny run costs about half of what it does at 16 kHz.
RATE = 8000


def tiny_recipe(exp_dir: Path, exp: dict[str, Any] | None = None, **trainer: Any) -> dict[str, Any]:
    return {
        "name": "tiny_nest",
        "model": {
            "sample_rate": RATE,
            "num_classes": CLASSES,
            "num_books": 1,
            "code_dim": 16,
            "mask_position": "pre_conv",
            "train_ds": {"manifest_filepath": None, "sample_rate": RATE, "batch_size": 8, "shuffle": True, "num_workers": 0},
            "validation_ds": {"manifest_filepath": None, "sample_rate": RATE, "batch_size": 8, "shuffle": False},
            "preprocessor": {"name": "mel_spectrogram", "features": FEATS, "sample_rate": RATE},
            "masking": {"name": "random_block", "feat_in": FEATS, "block_size": 20, "mask_prob": 0.5},
            "quantizer": {"name": "random_projection", "feat_in": FEATS, "code_dim": 16, "num_classes": CLASSES,
                          "num_books": 1, "combine_time_steps": 8},
            "encoder": {"name": "fast_conformer", "feat_in": FEATS, "n_layers": 1, "d_model": D_MODEL, "n_heads": 2,
                        "subsampling_conv_channels": 16, "conv_kernel_size": 9, "dropout": 0.0,
                        "dropout_pre_encoder": 0.0, "dropout_emb": 0.0},
            "decoder": {"name": "multi_softmax", "feat_in": D_MODEL, "num_classes": CLASSES, "num_decoders": 1},
            "loss": {"name": "multi_mlm", "combine_time_steps": 8, "num_decoders": 1},
            "optim": {"name": "adamw", "lr": 3e-3, "betas": [0.9, 0.98], "weight_decay": 1e-3,
                      "sched": {"name": "noam", "d_model": D_MODEL, "warmup_steps": 5, "min_lr": 1e-6}},
        },
        "trainer": {"devices": "cpu", "max_steps": 30, "log_every_n_steps": 5, "val_check_interval": 10,
                    "limit_val_batches": 2, "seed": 7, **trainer},
        "exp_manager": {"exp_dir": str(exp_dir), "name": "tiny", **(exp or {})},
    }


def write_recipe(path: Path, exp_dir: Path, exp: dict[str, Any] | None = None, **trainer: Any) -> Path:
    path.write_text(yaml.safe_dump(tiny_recipe(exp_dir, exp, **trainer), sort_keys=False))
    return path
