"""Which datasets a run trains and validates on, with the bundled demo data as the fallback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestkit.data.config import DatasetConfig
from nestkit.errors import DataError


@dataclass(frozen=True)
class Datasets:
    train: DatasetConfig
    validation: DatasetConfig | None
    note: str = ""


def _demo() -> dict[str, str]:
    """Paths of the bundled demo manifests: train, validation, noise."""
    from nestkit.data import demo_manifests

    train, validation, noise = demo_manifests()
    return {"train": str(train), "validation": str(validation), "noise": str(noise)}


def resolve_datasets(recipe: Any) -> Datasets:
    """The recipe's datasets; a null ``train_ds.manifest_filepath`` means the bundled demo data."""
    train = recipe.train_ds or DatasetConfig(sample_rate=recipe.sample_rate)
    val = recipe.validation_ds
    if train.has_data:
        return Datasets(train, val if val is not None and val.has_data else None)
    demo = _demo()
    train = train.model_copy(update={"manifest_filepath": demo["train"], "noise_manifest": train.noise_manifest or demo["noise"]})
    val_base = val or DatasetConfig(batch_size=train.batch_size, shuffle=False, sample_rate=train.sample_rate)
    if not val_base.has_data:
        val = val_base.model_copy(update={"manifest_filepath": demo["validation"], "noise_manifest": val_base.noise_manifest or demo["noise"]})
    else:
        val = val_base
    return Datasets(train, val, note=f"model.train_ds.manifest_filepath is null: using the bundled demo data ({Path(demo['train']).parent})")


def build_loaders(recipe: Any, factory: Any, *, seed: int, rank: int, world_size: int, say: Any) -> tuple[DatasetConfig, Any, Any]:
    """(training dataset config, training loader, validation loader or None); ``factory`` makes
    loaders (None: :func:`nestkit.data.build_dataloader`)."""
    sets = resolve_datasets(recipe)
    if sets.note:
        say(sets.note)
    if factory is None:
        from nestkit.data import build_dataloader as factory

        _files_exist(sets)
    common = {"sample_rate": recipe.sample_rate, "seed": seed, "rank": rank, "world_size": world_size,
              "registry": recipe.registry}
    train = _loader(factory, "model.train_ds", sets.train, train=True, epoch=0, **common)
    val = _loader(factory, "model.validation_ds", sets.validation, train=False, epoch=0, **common) if sets.validation else None
    return sets.train, train, val


def _loader(factory: Any, key: str, cfg: DatasetConfig, **kwargs: Any) -> Any:
    """``factory(cfg, **kwargs)``; a data error names the recipe section it comes from."""
    try:
        return factory(cfg, **kwargs)
    except DataError as err:
        raise DataError(f"{key}: {err}") from err


def _files_exist(sets: Datasets) -> None:
    """A missing manifest, named by its key: a section names two (speech and noise)."""
    for key, cfg in (("model.train_ds", sets.train), ("model.validation_ds", sets.validation)):
        for name, paths in (cfg.missing_files() if cfg is not None else {}).items():
            raise DataError(f"{key}.{name}: no such file: {', '.join(paths)}")
