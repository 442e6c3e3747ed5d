"""The experiment folder: ``exp_dir/name/`` with recipe.yaml, tensorboard/ and checkpoints/."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestkit.errors import CheckpointError

DEFAULT_ROOT = "nest_experiments"


@dataclass(frozen=True)
class Experiment:
    folder: Path

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.folder / "tensorboard"

    @property
    def recipe_file(self) -> Path:
        return self.folder / "recipe.yaml"

    @staticmethod
    def folder_for(recipe: Any) -> Path:
        exp = recipe.exp_manager
        root = Path(exp.exp_dir) if exp.exp_dir else Path(DEFAULT_ROOT)
        return (root / (exp.name or recipe.name)).absolute()

    @classmethod
    def create(cls, recipe: Any, main: bool = True) -> Experiment:
        """The experiment of ``recipe``; rank 0 creates it and writes the resolved recipe."""
        exp = cls(cls.folder_for(recipe))
        if main:
            tmp = exp.recipe_file.with_name(".recipe.yaml.tmp")
            try:
                exp.checkpoints.mkdir(parents=True, exist_ok=True)
                tmp.write_text(recipe.to_yaml())
                os.replace(tmp, exp.recipe_file)
            except OSError as exc:
                raise CheckpointError(
                    f"cannot write to the experiment folder {exp.folder}: {exc.strerror or exc} "
                    "(set exp_manager.exp_dir to a writable folder)"
                ) from None
        return exp
