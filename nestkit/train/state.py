"""What a training checkpoint holds, and how a run continues from one.

:class:`Position` is where a run stands (the counters a checkpoint saves); :class:`ResumePlan`
says how the data and random streams continue after a resume. Both are plain values, built
once by :func:`restore` and read by the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestkit.train import checkpoint as ckpt
from nestkit.train import distributed as dist_utils
from nestkit.train import rng
from nestkit.recipe import Recipe
from nestkit.train.distributed import DistInfo
from nestkit.train.recipe_changes import Change, recipe_changes
from nestkit.train.setup import TrainingParts


@dataclass
class Position:
    """Where a run stands."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of the current epoch already consumed
    best_val_loss: float | None = None
    nonfinite_total: int = 0


@dataclass(frozen=True)
class ResumePlan:
    """How a run continues. A fresh run: seed the generators, start the loader's epoch 0."""

    rng_state: dict[str, Any] | None = None  # restore this rank's generators exactly
    rng_offset: int = 0  # else seed with seed + rank + offset (a changed world size)
    loader_restored: bool = False  # the loader continues its saved epoch at its saved position
    skip_batches: int = 0  # else replay the epoch up to here
    last_is_current: bool = False  # last.ckpt already holds this state (no need to write it again)
    target_stats: dict[str, Any] | None = None  # running target frequencies

    def start_generators(self, seed: int, rank: int) -> None:
        """Restore this rank's random generators, or seed them for a fresh start."""
        if self.rng_state is not None:
            rng.restore(self.rng_state)
        else:
            rng.seed_everything(seed + rank + self.rng_offset)


def find_resume(exp_cfg: Any, keeper: ckpt.CheckpointKeeper | None, say: Any) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from, read (and checked) before anything heavy is built."""
    explicit = exp_cfg.resume_from_checkpoint
    if explicit:
        return Path(explicit), ckpt.load_checkpoint(explicit)
    if not (exp_cfg.resume_if_exists and keeper is not None):
        return None
    found = ckpt.find_resume(keeper.folder)
    if found is None:
        if not exp_cfg.resume_ignore_no_checkpoint:
            raise ckpt.CheckpointError(
                f"no checkpoint to resume in {keeper.folder} (set exp_manager.resume_ignore_no_checkpoint=true to start fresh)"
            )
        return None
    path, state, damaged = found
    for reason in damaged:
        say(f"note: skipped an unreadable checkpoint: {reason}")
    return path, state


def _mismatch(path: Path, exc: Exception, what: str) -> ckpt.CheckpointError:
    text = " ".join(str(exc).split())[:200]
    return ckpt.CheckpointError(f"{path} does not match this recipe's {what}: {text}")


# Keys whose change a resumed run cannot take: the targets must stay those the run trained on.
FIXED_KEYS = ("model.quantizer.", "model.num_classes", "model.num_books", "model.code_dim", "model.mask_position")
# Model keys that never touch the weights (data, optimizer): changing them is always fine.
FREE_MODEL_KEYS = ("model.train_ds.", "model.validation_ds.", "model.test_ds.", "model.optim.")


def _cannot_take(path: Path, changes: list[Change], *, fits: bool) -> ckpt.CheckpointError:
    """Why the run cannot continue from ``path``: its weights do not fit the model the recipe now
    builds, or (``fits``) they do but the targets they were trained on would change."""
    listed = "; ".join(str(c) for c in changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
    why = ("continuing would change the targets its training predicts" if fits
           else "its weights do not fit the model the recipe now builds")
    return ckpt.CheckpointError(
        f"{path} was trained with other model settings than the recipe now has ({listed}); {why}: "
        "put them back, or train a new experiment (exp_manager.name=NEW)")


def _load_optimizer(parts: TrainingParts, state: dict[str, Any], retuned: bool) -> None:
    """Optimizer, scheduler and scaler state. ``retuned``: the recipe changed optimizer settings,
    so the optimizer keeps its moments but takes the new hyperparameters, and the schedule
    continues at its step with the new settings."""
    saved = state["optimizer"]
    if retuned:
        fresh = parts.optimizer.state_dict()["param_groups"]
        if len(fresh) != len(saved["param_groups"]):
            raise ValueError(f"{len(saved['param_groups'])} parameter groups saved, {len(fresh)} now")
        saved = {"state": saved["state"],
                 "param_groups": [{**f, "params": old["params"]} for f, old in zip(fresh, saved["param_groups"])]}
    parts.optimizer.load_state_dict(saved)
    sched = state.get("scheduler")
    if parts.scheduler is not None and sched is not None:
        if retuned:
            parts.scheduler.last_epoch = int(sched["last_epoch"])
            parts.scheduler._step_count = int(sched.get("_step_count", 1))
            lrs = parts.scheduler.get_lr()
            for group, lr in zip(parts.optimizer.param_groups, lrs):
                group["lr"] = lr
            parts.scheduler._last_lr = list(lrs)
        else:
            parts.scheduler.load_state_dict(sched)
    if parts.scaler is not None and state.get("scaler") is not None:
        parts.scaler.load_state_dict(state["scaler"])


def restore(
    found: tuple[Path, dict[str, Any]] | None, parts: TrainingParts, loader: Any, info: DistInfo,
    position: Position, keeper: ckpt.CheckpointKeeper | None, say: Any, recipe: Recipe,
) -> ResumePlan:
    """Load ``found`` into the parts, loader and position; how the run continues. Only the
    recipe's data, optimizer and trainer settings may differ from the checkpoint's (listed)."""
    if found is None:
        return ResumePlan()
    path, state = found
    if "optimizer" not in state:  # a model-only checkpoint (import-nemo, save_model): initialise from it
        try:
            parts.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise _mismatch(path, exc, "model") from None
        say(f"initialised the model from {path} (weights only); training starts at step 0")
        return ResumePlan()
    changes = recipe_changes(state.get("recipe", ""), recipe)
    model_changes = [c for c in changes if c.key.startswith("model.") and not c.key.startswith(FREE_MODEL_KEYS)]
    if any(c.key.startswith(FIXED_KEYS) for c in changes):
        raise _cannot_take(path, [c for c in changes if c.key.startswith(FIXED_KEYS)], fits=True)
    try:
        parts.model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise (_cannot_take(path, model_changes, fits=False) if model_changes else _mismatch(path, exc, "model")) from None
    try:
        _load_optimizer(parts, state, retuned=any(c.key.startswith("model.optim.") for c in changes))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise _mismatch(path, exc, "optimizer") from None
    if changes:
        say("note: the recipe differs from the checkpoint's; applied: " + "; ".join(str(c) for c in changes))
    position.step, position.epoch = int(state["step"]), int(state["epoch"])
    position.batches_in_epoch = int(state["batches_in_epoch"])
    position.best_val_loss = state.get("best_val_loss")
    position.nonfinite_total = int(state.get("nonfinite_total", 0))
    # last.ckpt holds this state only when it is what we resumed from. A newer step file (a kill
    # between it and last.ckpt) or an outside checkpoint must be saved again, even with no step left.
    common = {"last_is_current": keeper is not None and path == keeper.last,
              "target_stats": state.get("target_stats")}
    say(f"resumed from {path} at step {position.step} (epoch {position.epoch})")
    per_rank = state.get("per_rank") or []
    if state.get("world_size") == info.world_size and len(per_rank) == info.world_size:
        mine = per_rank[info.rank]
        if mine.get("loader") is not None:
            loader.load_state_dict(mine["loader"])
            return ResumePlan(rng_state=mine["rng"], loader_restored=True, **common)
        return ResumePlan(rng_state=mine["rng"], skip_batches=position.batches_in_epoch, **common)
    say(f"note: world size changed ({state.get('world_size')} -> {info.world_size}): data order and random state restart from step {position.step}")
    position.epoch += 1 if position.batches_in_epoch else 0
    position.batches_in_epoch = 0
    return ResumePlan(rng_offset=7919 * position.step, **common)


def checkpoint_state(
    parts: TrainingParts, loader: Any, info: DistInfo, position: Position, recipe_yaml: str,
    val_loss: float | None, target_stats: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The checkpoint dict on rank 0 (None elsewhere); every rank must call this (RNG gather)."""
    per_rank = dist_utils.gather_objects({"rng": rng.capture(), "loader": loader.state_dict()}, info.world_size)
    if not info.is_main:
        return None
    return {
        "format": ckpt.FORMAT,
        "version": ckpt.VERSION,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "step": position.step,
        "epoch": position.epoch,
        "batches_in_epoch": position.batches_in_epoch,
        "world_size": info.world_size,
        "per_rank": per_rank,
        "val_loss": val_loss,
        "best_val_loss": position.best_val_loss,
        "nonfinite_total": position.nonfinite_total,
        "target_stats": target_stats,
        "recipe": recipe_yaml,
    }
