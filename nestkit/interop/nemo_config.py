"""NeMo training configs (model + trainer + exp_manager) to nestkit recipes, with one note line
for every key that is dropped or changed on the way (nothing is dropped silently)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from nestkit.errors import NestkitError, RecipeError, RecipeErrors
from nestkit.files import replace_text
from nestkit.interop.nemo import recipe_from_nemo_config, shown
from nestkit.recipe import REFERENCE, interpolate
from nestkit.recipe_yaml import read_yaml
from nestkit.train.config import ExpManagerConfig, TrainerConfig

# NeMo values nestkit spells differently: (section, key, NeMo value) -> (nestkit value, why).
_CHANGED_VALUES: dict[tuple[str, str, Any], tuple[Any, str]] = {
    ("trainer", "devices", -1): ("auto", "every GPU, else the CPU"),
    ("trainer", "max_epochs", -1): (None, "no limit"),
}
_SECTIONS = ("name", "model", "trainer", "exp_manager")
_SCALARS = (str, int, float, bool, type(None))


def _dropped(value: Any, where: str, notes: list[str]) -> None:
    """One note per leaf of a value nestkit has no key for, each named by its full dotted key."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _dropped(item, f"{where}.{key}", notes)
    else:
        notes.append(f"{where} has no nestkit equivalent; dropped (was {shown(value)})")


def _submodel(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _known(section: Any, model: type[BaseModel], where: str, notes: list[str]) -> dict[str, Any]:
    """The keys of a NeMo ``trainer``/``exp_manager`` section (or a mapping inside one) that
    ``model`` has, read recursively; a note for every other key and every changed value."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise RecipeError(f"must be a mapping, got {type(section).__name__}", key=where)
    kept: dict[str, Any] = {}
    for key, value in section.items():
        dotted = f"{where}.{key}"
        field = model.model_fields.get(str(key))
        if field is None:
            _dropped(value, dotted, notes)
        elif (sub := _submodel(field)) is not None and isinstance(value, dict):
            kept[key] = _known(value, sub, dotted, notes)
        elif sub is not None and value is None:
            notes.append(f"{dotted} is null in NeMo; left out (nestkit's defaults apply)")
        elif dotted == "trainer.devices" and isinstance(value, list) and value and all(type(v) is int for v in value):
            notes.append(f"{dotted}: NeMo's {value!r} (those GPUs) written as {len(value)} "
                         "(the first visible GPUs; pick them with CUDA_VISIBLE_DEVICES)")
            kept[key] = len(value)
        elif isinstance(value, _SCALARS) and (where, key, value) in _CHANGED_VALUES:
            new, why = _CHANGED_VALUES[(where, key, value)]
            notes.append(f"{dotted}: NeMo's {value!r} written as {new!r} ({why})")
            kept[key] = new
        else:
            kept[key] = value
    return kept


def _lookup(data: Any, dotted: str) -> tuple[bool, Any]:
    node = data
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _with_references(raw: Any, converted: Any, resolved: dict[str, Any]) -> Any:
    """``converted`` with NeMo's whole-value ``${...}`` references put back where the value is
    still what the reference gives (``decoder.feat_in: ${model.encoder.d_model}``), so that an
    override of the referenced key carries over as it does in NeMo and the shipped recipes."""
    if isinstance(raw, dict) and isinstance(converted, dict):
        return {k: _with_references(raw[k], v, resolved) if k in raw else v for k, v in converted.items()}
    if isinstance(raw, list) and isinstance(converted, list) and len(raw) == len(converted):
        return [_with_references(r, c, resolved) for r, c in zip(raw, converted)]
    if isinstance(raw, str) and (ref := REFERENCE.fullmatch(raw.strip())) is not None:
        found, value = _lookup(resolved, ref.group(1).strip())
        if found and value == converted and type(value) is type(converted):
            return raw.strip()
    return converted


def _in_file(err: RecipeError, file: str) -> RecipeError:
    """``err`` attributed to the NeMo config, also where validating the converted mapping named it ``<recipe>``."""
    if isinstance(err, RecipeErrors):
        return RecipeErrors([_in_file(e, file) for e in err.errors])
    return RecipeError(err.message, err.key, file if err.file in ("", "<recipe>") else err.file)


def convert_training_config(path: str | Path) -> tuple[str, list[str]]:
    """(recipe YAML text, note lines) for a NeMo NEST training config file."""
    from nestkit.recipe import load_recipe

    path = Path(path)
    raw = read_yaml(path)
    notes: list[str] = []
    try:
        resolved = interpolate(raw)
        recipe = recipe_from_nemo_config(resolved, notes)
        recipe["trainer"] = _known(resolved.get("trainer"), TrainerConfig, "trainer", notes)
        recipe["exp_manager"] = _known(resolved.get("exp_manager"), ExpManagerConfig, "exp_manager", notes)
        notes += [f"{key} has no nestkit equivalent; dropped" for key in resolved if key not in _SECTIONS]
        referenced = _with_references(raw, recipe, recipe)
        if interpolate(referenced) == recipe:  # the references give the converted values exactly
            recipe = referenced
        load_recipe(recipe)  # the converted recipe must validate before it is written
    except RecipeError as err:
        raise _in_file(err, str(path)) from None
    header = [f"# converted from {path.name} by `nestkit convert-nemo-config`"] + [f"# note: {line}" for line in notes]
    return "\n".join(header) + "\n" + yaml.safe_dump(recipe, sort_keys=False), notes


def write_recipe(out: str | Path, text: str, source: str | Path | None = None) -> Path:
    """Write a converted recipe to ``out``, creating missing folders; the file is replaced whole
    (a failed write leaves any previous one). A problem is one :class:`NestkitError` line naming
    ``out``; ``source`` (the NeMo config) is never overwritten."""
    out = Path(out)
    if source is not None and out.exists() and out.resolve() == Path(source).resolve():
        raise NestkitError(f"{out}: is the NeMo config being converted; write the recipe to another file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir's words for a file where the folder should be
        raise NestkitError(f"{out}: cannot write the recipe: {out.parent} is a file, not a folder") from None
    except OSError as exc:
        raise NestkitError(f"{out}: cannot create its folder: {exc.strerror or exc}") from None
    try:
        replace_text(out, text)
    except OSError as exc:
        raise NestkitError(f"{out}: cannot write the recipe: {exc.strerror or exc}") from None
    return out
