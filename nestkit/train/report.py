"""What a run tells its user: the start summary, the end summary, and how it compares with the
reference curve a recipe may ship beside it (``<recipe>.reference.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nestkit.data.skips import SkipReport, merge_reports
from nestkit.errors import RecipeError
from nestkit.recipe import Recipe, load_recipe, recipe_file
from nestkit.train import distributed as dist_utils
from nestkit.train.progress import summary_block
from nestkit.train.setup import normalise_precision

# How far a run may stray from its recipe's reference curve and still be said to track it.
REFERENCE_TOLERANCE_NATS = 0.1
# What a reference curve depends on: the model with its data and optimizer, and how the trainer
# steps and validates (not how long it runs, where it writes or how its loaders are fed).
CURVE_TRAINER_KEYS = ("seed", "precision", "accumulate_grad_batches", "gradient_clip_val", "val_check_interval",
                      "limit_val_batches")
LOADER_ONLY_KEYS = frozenset({"num_workers", "pin_memory", "multiprocessing_context", "max_skipped_items"})


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    steps: int
    epochs: int
    exp_dir: Path
    last_checkpoint: Path | None
    best_checkpoints: list[Path] = field(default_factory=list)
    best_val_loss: float | None = None
    wall_s: float = 0.0
    stopped_by: str | None = None
    nonfinite_steps: int = 0
    last_validation: dict[str, float] = field(default_factory=dict)  # metrics of the last validation
    validations: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> metrics, this process's run


def start_summary(recipe: Any, folder: Path, parts: Any, info: Any, loader: Any, batch_size: int, step: int) -> str:
    """What is about to run: recipe, folder, devices, size, data, length, batch."""
    model, cfg = parts.model, recipe.trainer
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dev = info.device
    devices = f"{info.world_size} x {dev.type}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
    limit = [f"{cfg.max_steps} steps"] if cfg.max_steps > 0 else []
    limit += [f"{cfg.max_epochs} epochs"] if cfg.max_epochs is not None else []
    rows = [
        ("recipe", f"{recipe.name} ({recipe.source})"),
        ("experiment", str(folder)),
        ("devices", devices),
        ("precision", parts.precision),
        ("parameters", f"{total:,} ({trainable:,} trainable)"),
        ("train data", loader.describe()),
        ("length", " or ".join(limit)),
        ("batch", f"{batch_size} x {cfg.accumulate_grad_batches} accumulation x {info.world_size} ranks"),
    ]
    if step:
        rows.append(("resuming at", f"step {step}"))
    return summary_block("nestkit train", rows)


@dataclass(frozen=True)
class RunSkips:
    """What a run's loaders skipped, every rank's together: training, and validation (None without)."""

    train: SkipReport
    validation: SkipReport | None = None

    @classmethod
    def gather(cls, train_loader: Any, val_loader: Any, info: Any) -> RunSkips:
        """Every rank must call this (a collective); an item skipped on several ranks counts once."""
        mine = [train_loader.skipped_report()] + ([val_loader.skipped_report()] if val_loader is not None else [])
        every = dist_utils.gather_objects(mine, info.world_size)
        merged = [merge_reports(rank[k] for rank in every) for k in range(len(mine))]
        return cls(merged[0], merged[1] if len(merged) > 1 else None)

    def lines(self) -> list[str]:
        """skipped_items.txt: ``reason<TAB>path``, validation's marked ``validation:reason<TAB>path``."""
        return self.train.lines() + (self.validation.lines("validation:") if self.validation is not None else [])

    def rows(self, skipped_file: Path) -> list[tuple[str, str]]:
        """The end summary's lines on skipped items, training and validation apart."""
        val = self.validation if self.validation is not None and self.validation.total else None
        if not self.train.total and val is None:
            return []
        told = [("", self.train.explain())] if val is None else (
            [("training: ", self.train.explain())] if self.train.total else []) + [("validation: ", val.explain())]
        rows = [("skipped items" if k == 0 else "", f"{label}{text}") for k, (label, text) in enumerate(told)]
        return rows[:-1] + [(rows[-1][0], f"{rows[-1][1]}; all of them in {skipped_file}")]


def end_summary(r: TrainResult, reference_line: str | None, skipped: RunSkips, skipped_file: Path) -> str:
    val = r.last_validation
    rows = [
        ("steps", str(r.steps)),
        ("time", f"{r.wall_s:.1f} s"),
        ("best val_loss", f"{r.best_val_loss:.4f}" if r.best_val_loss is not None else "n/a"),
    ]
    if "val_context_gain" in val:
        rows.append(("val context gain", f"{val['val_context_gain']:+.3f} nats (masked-token NLL {val['val_masked_nll']:.4f} "
                                         f"vs unigram baseline {val['val_unigram_loss']:.4f})"))
    rows.append(("last checkpoint", str(r.last_checkpoint) if r.last_checkpoint else "none"))
    if r.best_checkpoints:
        rows.append(("best checkpoints", ", ".join(p.name for p in r.best_checkpoints)))
    if r.nonfinite_steps:
        rows.append(("skipped steps", f"{r.nonfinite_steps} (non-finite)"))
    rows += skipped.rows(skipped_file)
    if r.stopped_by:
        rows.append(("stopped by", r.stopped_by))
    if reference_line:
        rows.append(("reference", reference_line))
    return summary_block("done" if not r.stopped_by else "stopped", rows)


def reference_file(recipe_source: str | Path | None) -> Path | None:
    """``<recipe>.reference.json`` beside the recipe file, if the recipe ships one."""
    if not recipe_source:
        return None
    try:
        path = recipe_file(recipe_source)
    except RecipeError:
        return None
    candidate = path.with_name(path.stem + ".reference.json")
    return candidate if candidate.is_file() else None


def curve_inputs(recipe: Recipe) -> dict[str, Any]:
    """{dotted key: value} of what a run's curve depends on, typed where nestkit knows the section
    (datasets, trainer), so that writing a default, or 0 for no clipping, changes nothing."""
    flat = _flat({k: v for k, v in recipe.data["model"].items() if k not in ("train_ds", "validation_ds")}, "model")
    for name, ds in (("train_ds", recipe.train_ds), ("validation_ds", recipe.validation_ds)):
        if ds is not None:
            flat.update(_flat(ds.model_dump(exclude=set(LOADER_ONLY_KEYS)), f"model.{name}"))
    trainer = recipe.trainer.model_dump(include=set(CURVE_TRAINER_KEYS))
    trainer.update(gradient_clip_val=trainer["gradient_clip_val"] or 0.0, precision=normalise_precision(trainer["precision"]))
    flat.update({f"trainer.{k}": v for k, v in trainer.items()})
    return flat


def departures(recipe: Recipe, shipped: Path) -> list[str]:
    """The keys on which ``recipe`` (as this run resolved it) differs from the recipe file
    ``shipped`` as it is, among those its reference curve depends on (:func:`curve_inputs`)."""
    try:
        theirs = curve_inputs(load_recipe(shipped, registry=recipe.registry))
    except RecipeError:
        return ["(the shipped recipe does not load)"]
    ours = curve_inputs(recipe)
    return [key for key in sorted(ours.keys() | theirs.keys()) if ours.get(key, _ABSENT) != theirs.get(key, _ABSENT)]


_ABSENT = object()


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} of a nested mapping."""
    if not isinstance(data, dict) or not data:
        return {prefix: data}
    return {k: v for key, value in data.items() for k, v in _flat(value, f"{prefix}.{key}" if prefix else str(key)).items()}


def compare_with_reference(path: Path, validations: dict[int, dict[str, float]]) -> str | None:
    """One line: did this run's validation context gain track the reference curve at the steps
    both have? None when they share no step (a resumed or reconfigured run)."""
    try:
        ref: dict[str, Any] = json.loads(path.read_text())
        curve = dict(zip(ref["steps"], ref["val_context_gain"]))
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path.name} is unreadable; no comparison"
    common = [s for s in sorted(validations) if s in curve and "val_context_gain" in validations[s]]
    if not common:
        return None
    worst = max(common, key=lambda s: abs(validations[s]["val_context_gain"] - curve[s]))
    gap = validations[worst]["val_context_gain"] - curve[worst]
    last = common[-1]
    verdict = "tracked" if abs(gap) <= REFERENCE_TOLERANCE_NATS else "did NOT track"
    return (f"{verdict} {path.name} (context gain {validations[last]['val_context_gain']:+.3f} vs "
            f"{curve[last]:+.3f} at step {last}; largest gap {gap:+.3f} at step {worst}, tolerance {REFERENCE_TOLERANCE_NATS})")


def nothing_to_train(folder: Path, resumed: Path | None, own: bool, explicit: bool, step: int, max_steps: int | None) -> str | None:
    """What to say instead of training when the checkpoint a run resumed is already at (or past)
    ``trainer.max_steps``: the run's own last.ckpt (``own``), or one given as
    ``resume_from_checkpoint`` (``explicit``); None when steps are left, or when a newer step file
    of the run's own must still become its last.ckpt."""
    if max_steps is None or step < max_steps or resumed is None or not (own or explicit):
        return None
    further = f"to train it further, run again with trainer.max_steps=N (N > {step})"
    if own:
        return f"{folder} is finished: step {step} of trainer.max_steps={max_steps}; {further}"
    return f"nothing to train: {resumed} is at step {step}, past trainer.max_steps={max_steps}; {further}"


def conclude(result: TrainResult, recipe: Recipe, skipped: RunSkips, experiment: Any, say: Any, world_size: int = 1) -> None:
    """Rank 0 at the end of a run: the full list of skipped items (training and validation) into
    the experiment folder, and the end summary (with the verdict on the recipe's reference curve,
    if it ships one and the run kept what the curve depends on)."""
    listed = skipped.lines()
    if listed:
        experiment.write_text(experiment.skipped_file, "\n".join(listed) + "\n")
    say(end_summary(result, reference_verdict(recipe, result.validations, world_size), skipped, experiment.skipped_file))


def reference_verdict(recipe: Recipe, validations: dict[int, dict[str, float]], world_size: int = 1) -> str | None:
    """The end summary's line on the recipe's reference curve: tracked or not, or why there is no
    verdict (the run changed what the curve depends on, or ran on several processes: a larger
    batch per step); None without a curve."""
    ref = reference_file(recipe.source)
    if ref is None:
        return None
    if world_size != 1:
        return f"no verdict: {ref.name} is the curve of one process, and this run had {world_size} (a larger batch per step)"
    changed = departures(recipe, recipe_file(recipe.source))
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return (f"no verdict: {ref.name} is the curve of {Path(recipe.source).name} as shipped, and this run changed "
                f"{', '.join(changed[:3])}{more}")
    return compare_with_reference(ref, validations)
