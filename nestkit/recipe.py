"""YAML recipes: load, ``extends:``, ``${dotted.path}`` interpolation, overrides, validation.

The layout follows NeMo's training configs (``name``, ``model`` with its datasets,
components and ``optim``; ``trainer``; ``exp_manager``). Component sections carry ``name:``
(the registry name) where NeMo has ``_target_``. Everything is validated before anything
heavy runs, and every problem is a one-line :class:`~nestkit.errors.RecipeError`; all problems
of the overrides, then all problems of the resolved recipe, are reported together
(:class:`~nestkit.errors.RecipeErrors`). A recipe keeps the registry it was validated with, and
``nestkit.build_model`` builds from it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from nestkit.data.config import DatasetConfig
from nestkit.errors import RecipeError, RecipeErrors, combined, did_you_mean
from nestkit.overrides import apply_overrides
from nestkit.provenance import REFERENCE, without_echoes, writer
from nestkit.recipe_yaml import read_yaml
from nestkit.registry import Component, ComponentConfig, Registry, validate_fields
from nestkit.sections import DEFAULT_MODEL, MODEL_DATA_KEYS, field_default
from nestkit.train.config import ExpManagerConfig, TrainerConfig, folder_name_problem

TOP_LEVEL_KEYS = ("name", "model", "trainer", "exp_manager")


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` merged into a copy of ``base``; mappings merge, everything else replaces.

    A component section whose ``name`` changes is replaced whole: the old component's fields
    mean nothing to the new one."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        old = merged.get(key)
        switches_component = (
            isinstance(value, Mapping) and isinstance(old, dict) and "name" in value and "name" in old
            and value["name"] != old["name"]
        )
        if isinstance(value, Mapping) and isinstance(old, dict) and not switches_component:
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_raw(path: Path, _chain: tuple[Path, ...] = (), written: list[tuple[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The recipe mapping with ``extends:`` resolved (paths relative to the extending file;
    ``nestkit:NAME``, as the recipe itself or as its parent, is a recipe bundled with nestkit).
    ``written`` receives each file of the chain with what it writes itself, the recipe first."""
    path = recipe_file(path)
    path = path.resolve() if path.exists() else path
    if path in _chain:
        raise RecipeError("recipe extends itself (cycle: " + " -> ".join(map(str, _chain + (path,))) + ")", file=str(path))
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if written is not None:
        written.append((str(path), data))
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise RecipeError("expected a path to a recipe", key="extends", file=str(path))
    if parent.startswith(BUNDLED):  # nestkit:nest_demo.yaml: a recipe bundled with nestkit, from any folder
        if bundled_recipe(parent[len(BUNDLED):]) is None:
            raise RecipeError(_no_bundled(parent), key="extends", file=str(path))
        return deep_merge(load_raw(Path(parent), _chain + (path,), written), data)
    parent_path = Path(parent)
    if not parent_path.is_absolute():
        parent_path = path.parent / parent_path
    if not parent_path.exists():
        bundled = bundled_recipe(parent)
        if bundled is None:
            raise RecipeError(f"no such recipe '{parent}'", key="extends", file=str(path))
        parent_path = bundled
    return deep_merge(load_raw(parent_path, _chain + (path,), written), data)


BUNDLED = "nestkit:"  # extends: nestkit:NAME names a recipe of bundled_recipe()
BUNDLED_RECIPES = Path(__file__).resolve().parent / "recipes"  # package data: in every install, not only a checkout


def bundled_recipe(name: str) -> Path | None:
    """A recipe shipped inside the nestkit package (``nestkit:nest_demo.yaml``, ``nestkit:sizes/nest_small``)."""
    candidate = BUNDLED_RECIPES / name
    if candidate.suffix not in (".yaml", ".yml"):
        candidate = candidate.with_suffix(".yaml")
    return candidate if candidate.is_file() else None


def recipe_file(source: str | Path) -> Path:
    """The file of a recipe argument: a path, or ``nestkit:NAME`` for a bundled recipe."""
    text = str(source)
    if not text.startswith(BUNDLED):
        return Path(source)
    found = bundled_recipe(text[len(BUNDLED):])
    if found is None:
        raise RecipeError(_no_bundled(text), file=text)
    return found


def _no_bundled(source: str) -> str:
    """The error for ``nestkit:NAME`` naming no bundled recipe, with the names there are."""
    names = sorted(str(p.relative_to(BUNDLED_RECIPES)) for p in BUNDLED_RECIPES.rglob("*.yaml"))
    return f"nestkit has no bundled recipe '{source[len(BUNDLED):]}' (bundled: {', '.join(names)})"


# ---------------------------------------------------------------------------- interpolation


def _lookup(data: Mapping[str, Any], dotted: str, key: str, registry: Registry | None) -> Any:
    node: Any = data
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            if depth and not isinstance(node, (Mapping, list)):  # a section written as a scalar: that is the mistake
                parent = ".".join(parts[:depth])
                raise RecipeError(f"'${{{dotted}}}' cannot be read: {parent} is {node!r}, not a mapping", key=key)
            found, node = field_default(data, parts[: depth + 1], registry) if registry is not None else (False, None)
            if not found:
                raise RecipeError(f"'${{{dotted}}}' refers to a key that does not exist", key=key)
    return node


def interpolate(data: dict[str, Any], registry: Registry | None = None, copied: dict[str, str] | None = None) -> dict[str, Any]:
    """Resolve ``${dotted.path}`` references against the whole recipe (chains allowed); with
    ``registry``, a key the recipe does not write resolves to its component's default. ``copied``
    receives {key: the key it copies} for each value that is one whole reference."""

    def resolve(value: Any, key: str, stack: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v, f"{key}.{k}" if key else str(k), stack) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, f"{key}.{i}", stack) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = REFERENCE.fullmatch(value.strip())
        refs = [whole.group(1)] if whole else REFERENCE.findall(value)
        resolved: dict[str, Any] = {}
        for ref in refs:
            ref = ref.strip()
            if ref in stack:
                raise RecipeError(f"'${{{ref}}}' is circular ({' -> '.join(stack + (ref,))})", key=key)
            resolved[ref] = resolve(_lookup(data, ref, key, registry), ref, stack + (ref,))
        if whole:
            if copied is not None:
                copied[key] = whole.group(1).strip()
            return resolved[whole.group(1).strip()]
        return REFERENCE.sub(lambda m: str(resolved[m.group(1).strip()]), value)

    return resolve(data, "", ())


# ---------------------------------------------------------------------------- the recipe


@dataclass
class Recipe:
    """A validated recipe. ``data`` is the resolved mapping (after extends, overrides and
    interpolation); the typed parts are views of it."""

    data: dict[str, Any]
    name: str
    trainer: TrainerConfig
    exp_manager: ExpManagerConfig
    train_ds: DatasetConfig | None
    validation_ds: DatasetConfig | None
    model_component: Component
    model_config: ComponentConfig
    optimizer_section: dict[str, Any] | None
    scheduler_section: dict[str, Any] | None
    registry: Registry = field(repr=False, compare=False)  # what validated it, and what builds it
    source: str = ""
    notes: list[str] = field(default_factory=list)  # what overrides changed beyond their key (dropped keys)

    @property
    def sample_rate(self) -> int:
        """The rate audio is read at: the model's (``model.sample_rate``), else the datasets' default."""
        rate = model_sample_rate(self.model_config)
        return rate if rate is not None else DatasetConfig().sample_rate

    @property
    def model_section(self) -> dict[str, Any]:
        """The model component's section: ``model`` without datasets and ``optim``."""
        return model_section(self.data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False)

    def build_model(self) -> Any:
        """The model (a ``torch.nn.Module``), built from the registry this recipe was validated with;
        its config is not validated again. What ``nestkit.build_model`` does, for modules inside
        nestkit (which do not import the package's facade)."""
        try:
            return self.registry.make(self.model_component, self.model_config, key="model")
        except RecipeError as err:
            raise err.at(self.source) from err.__cause__


def model_section(data: Mapping[str, Any]) -> dict[str, Any]:
    """The model component's section of a recipe mapping (datasets and ``optim`` removed)."""
    section = {k: v for k, v in data["model"].items() if k not in (*MODEL_DATA_KEYS, "optim")}
    section.setdefault("name", DEFAULT_MODEL)
    return section


def _typed(model: type[BaseModel], value: Any, key: str, registry: Registry, problems: list[RecipeError]) -> Any:
    """Validate a fixed section (None if invalid); component sections nested in it are checked by
    the registry. Problems are appended to ``problems``."""
    fields = value if value is not None else {}
    typed, bad_fields = validate_fields(model, fields, key, problems)
    if isinstance(fields, Mapping):
        registry.check_sections(model, fields, bad_fields, key, problems)
    return typed


def _optim(optim: Any, registry: Registry, problems: list[RecipeError]) -> tuple[dict[str, Any] | None, Any]:
    """The optimizer and scheduler sections of ``model.optim``, checked."""
    if optim is None:
        return None, None
    if not isinstance(optim, dict):
        problems.append(RecipeError("expected a mapping with 'name:' of an optimizer", key="model.optim"))
        return None, None
    optimizer_section = {k: v for k, v in optim.items() if k != "sched"}
    registry.check("optimizer", optimizer_section, "model.optim", problems)
    scheduler_section = optim.get("sched")
    if scheduler_section is not None:
        registry.check("scheduler", scheduler_section, "model.optim.sched", problems)
    return optimizer_section, scheduler_section


def _names_the_run(exp_manager: Any) -> bool:
    """``exp_manager.name`` is set: it, not the recipe's name, names the run's folder (and is checked there)."""
    return isinstance(exp_manager, Mapping) and exp_manager.get("name") is not None


def validate(
    data: dict[str, Any], registry: Registry, source: str = "", origin: Callable[[RecipeError], str] | None = None,
    copied: Mapping[str, str] | None = None,
) -> Recipe:
    """Validate a resolved recipe mapping against nestkit's sections and the registry; every
    problem of every section is reported at once, each naming ``origin(problem)`` (the file that
    wrote its key), else ``source``. A problem of a value copied by ``${...}`` from a key that has
    its own problem (``copied``, from :func:`interpolate`) is that problem again: not repeated."""
    problems: list[RecipeError] = []
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.append(RecipeError(f"unknown section '{key}'{did_you_mean(str(key), TOP_LEVEL_KEYS)}", key=str(key)))
    name = data.get("name", "nestkit")
    if not isinstance(name, str):
        problems.append(RecipeError(f"expected a string, got {name!r}", key="name"))
    elif not _names_the_run(data.get("exp_manager")) and (problem := folder_name_problem(name)) is not None:
        problems.append(RecipeError(problem, key="name"))  # the run's folder name
    model = data.get("model")
    datasets: dict[str, Any] = dict.fromkeys(MODEL_DATA_KEYS)
    optimizer_section = scheduler_section = checked_model = None
    if isinstance(model, dict):
        for k in MODEL_DATA_KEYS:
            if model.get(k) is not None:
                datasets[k] = _typed(DatasetConfig, model[k], f"model.{k}", registry, problems)
        checked_model = registry.check("model", model_section(data), "model", problems)
        optimizer_section, scheduler_section = _optim(model.get("optim"), registry, problems)
    else:
        problems.append(RecipeError("expected a mapping with the model's components", key="model"))
    if checked_model is not None:
        _at_model_rate(datasets, checked_model[1], problems)
    trainer = _typed(TrainerConfig, data.get("trainer"), "trainer", registry, problems)
    if trainer is not None:
        problems.extend(_fractions_of_unknown_lengths(trainer, datasets))
    exp_manager = _typed(ExpManagerConfig, data.get("exp_manager"), "exp_manager", registry, problems)
    if problems:
        problems = without_echoes(problems, copied or {})
        raise combined([p.at((origin(p) if origin else "") or source) for p in problems])
    assert checked_model is not None
    return Recipe(
        data=data,
        name=name,
        trainer=trainer,
        exp_manager=exp_manager,
        train_ds=datasets["train_ds"],
        validation_ds=datasets["validation_ds"],
        model_component=checked_model[0],
        model_config=checked_model[1],
        optimizer_section=optimizer_section,
        scheduler_section=scheduler_section,
        registry=registry,
        source=source,
    )


def _fractions_of_unknown_lengths(trainer: TrainerConfig, datasets: Mapping[str, DatasetConfig | None]) -> list[RecipeError]:
    """A fraction of an epoch needs the epoch's length, which tarred and Lhotse data do not know."""
    problems = []
    for key, value, fraction, split, unit in (
        ("val_check_interval", trainer.val_check_interval, isinstance(trainer.val_check_interval, float), "train_ds", "steps"),
        ("limit_val_batches", trainer.limit_val_batches,
         isinstance(trainer.limit_val_batches, float) and trainer.limit_val_batches < 1, "validation_ds", "batches"),  # 1.0: all
    ):
        ds = datasets.get(split)
        if fraction and ds is not None and (ds.is_tarred or ds.use_lhotse):
            kind = "Lhotse" if ds.use_lhotse else "tarred"
            problems.append(RecipeError(f"{value} is a fraction of an epoch, and model.{split} is {kind} data, whose epoch "
                                        f"length is unknown: give a number of {unit}", key=f"trainer.{key}"))
    return problems


def model_sample_rate(config: ComponentConfig) -> int | None:
    """NeMo's ``model.sample_rate``: the rate the model's features are computed at (None for a
    model component without that key)."""
    rate = getattr(config, "sample_rate", None)
    return rate if isinstance(rate, int) else None


def _at_model_rate(datasets: dict[str, DatasetConfig | None], model: ComponentConfig, problems: list[RecipeError]) -> None:
    """A dataset is read (and resampled) at its ``sample_rate``: one that does not write it takes
    the model's; one that writes another feeds the preprocessor audio at the wrong speed."""
    rate = model_sample_rate(model)
    for k, ds in datasets.items():
        if ds is None or rate is None or ds.sample_rate == rate:
            continue
        if "sample_rate" not in ds.model_fields_set:
            datasets[k] = ds.model_copy(update={"sample_rate": rate})
        else:
            problems.append(RecipeError(
                f"{ds.sample_rate} differs from model.sample_rate ({rate}): write sample_rate: ${{model.sample_rate}}",
                key=f"model.{k}.sample_rate"))


def load_recipe(
    path: str | Path | Mapping[str, Any], overrides: Iterable[str] | str = (), registry: Registry | None = None,
    notes: list[str] | None = None,
) -> Recipe:
    """Load, resolve and validate a recipe file (or mapping) with ``dotted.key=value`` overrides
    against ``registry`` (default: the installed plugins). ``notes`` (also ``recipe.notes``)
    receives a line for each override that changed more than its key, as soon as it is applied."""
    if registry is None:
        from nestkit.plugins import get_registry

        registry = get_registry()
    written: list[tuple[str, dict[str, Any]]] = []
    if isinstance(path, Mapping):
        source, raw = "<recipe>", copy.deepcopy(dict(path))
    else:
        source = str(path)
        raw = load_raw(Path(path), written=written)
    overrides = [overrides] if isinstance(overrides, str) else list(overrides)  # one override, not its letters
    notes = notes if notes is not None else []
    copied: dict[str, str] = {}
    overridden = {text.partition("=")[0].strip() for text in overrides}

    def origin(problem: RecipeError) -> str:
        return writer(problem.full_key, written, overridden)

    try:
        data = interpolate(apply_overrides(raw, overrides, registry, notes), registry, copied)
    except RecipeErrors as err:
        raise combined([e.at(origin(e) or source) for e in err.errors]) from None
    except RecipeError as err:
        raise err.at(origin(err) or source) from None
    recipe = validate(data, registry, source, origin=origin, copied=copied)
    recipe.notes = notes
    return recipe
