"""The training loop: steps, logging, validation and checkpoints, on one rank or many.

The parts live next door, one concept each: setup (model, optimizer, precision), step (one
optimizer step, no host read), metrics (device sums read once per log interval), validation,
state (checkpoint contents, resume), batches (the epoch stream), stopping (signals, crashes),
report (summaries). This module puts them in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from nestkit.errors import NestkitError, RecipeError
from nestkit.health.warnings import TargetHealthChecker
from nestkit.train import checkpoint as ckpt
from nestkit.train import distributed as dist_utils
from nestkit.train import rng
from nestkit.train.batches import DataWait, accumulation_groups, check_epoch_bound, empty_epoch_error
from nestkit.train.data import build_loaders
from nestkit.train.experiment import Experiment
from nestkit.train.faults import Faults
from nestkit.train.logging import ScalarLogger
from nestkit.train.metrics import TrainMetrics, run_metrics
from nestkit.train.progress import Progress, validation_line
from nestkit.train.report import RunSkips, TrainResult, conclude, nothing_to_train, start_summary
from nestkit.train.setup import build_parts, configure_blocks, encoder_name, wrap_distributed
from nestkit.train.state import Position, ResumePlan, checkpoint_state, find_resume, restore
from nestkit.train.step import StepRunner
from nestkit.train.stopping import StopRequest, explain_crash
from nestkit.train.validation import validate, validation_schedule

__all__ = ["Trainer", "TrainResult", "train"]

class Trainer:
    """Runs one experiment from a validated recipe."""

    def __init__(self, recipe: Any, *, devices: int | str | None = None, model: torch.nn.Module | None = None,
                 loader_factory: Callable[..., Any] | None = None, announce: Callable[[str], None] | None = None) -> None:
        """``model`` and ``loader_factory`` replace the recipe's (tests); ``announce`` replaces print."""
        self.recipe, self.cfg, self.exp_cfg = recipe, recipe.trainer, recipe.exp_manager
        self.devices = devices if devices is not None else self.cfg.devices
        self._model, self._loader_factory, self._announce = model, loader_factory, announce
        if self.cfg.max_steps <= 0 and self.cfg.max_epochs is None:
            raise RecipeError("set trainer.max_steps or trainer.max_epochs (training would never end)", key="trainer.max_steps")
        dist_utils.check_nodes(self.cfg.num_nodes, recipe.source)
        self.faults = Faults.from_env()

    def _say(self, text: str) -> None:
        if self.info.is_main:
            self._announce(text) if self._announce else print(text, flush=True)

    def run(self) -> TrainResult:
        """Train to the end (or to a stop request) and return what happened."""
        t_start = time.perf_counter()
        self.info = dist_utils.setup(self.devices, self.cfg.accelerator)
        try:
            return self._run(t_start)
        except RuntimeError as exc:
            raise explain_crash(exc, self.info) from None
        finally:
            dist_utils.teardown()

    def _build(self) -> None:
        cfg, info = self.cfg, self.info
        rng.seed_everything(cfg.seed)
        torch.backends.cudnn.benchmark = cfg.benchmark
        self.parts = build_parts(self.recipe, device=info.device, model=self._model, distributed=info.distributed,
                                 scheduler_steps=cfg.max_steps if cfg.max_steps > 0 else None, sync_batchnorm=cfg.sync_batchnorm)
        configure_blocks(self.parts, compile=cfg.compile, activation_checkpointing=cfg.activation_checkpointing,
                         encoder=encoder_name(self.recipe), source=self.recipe.source)
        wrap_distributed(self.parts, find_unused_parameters=cfg.strategy == "ddp_find_unused_parameters_true")
        self.train_cfg, self.train_loader, self.val_loader = build_loaders(
            self.recipe, self._loader_factory, seed=cfg.seed, rank=info.rank, world_size=info.world_size, say=self._say)
        check_epoch_bound(cfg.max_epochs, info, self.train_loader, self.recipe.source)
        self.val_limit, self.val_every = validation_schedule(cfg, self.train_loader, self.val_loader)
        self.metrics = TrainMetrics(info.device, self.train_cfg.sample_rate, info.distributed)
        self.runner = StepRunner(self.parts, sink=self.metrics.add, gradient_clip_val=cfg.gradient_clip_val)

    def _run(self, t_start: float) -> TrainResult:
        self.experiment = Experiment.of(self.recipe)
        self._build()  # first: a recipe whose model or data cannot be built leaves no folder behind
        with self.experiment.claimed(self.info.is_main, self._say):
            return self._resume_and_train(t_start)

    def _resume_and_train(self, t_start: float) -> TrainResult:
        self.keeper = ckpt.CheckpointKeeper.of(self.experiment.checkpoints, self.exp_cfg)
        found = find_resume(self.exp_cfg, self.keeper, self._say)
        self.position = Position()
        plan = restore(found, self.parts, self.train_loader, self.info, self.position, self.keeper, self._say, self.recipe)
        self.metrics.load_state_dict(plan.target_stats)
        self.saved_at = self.position.step if plan.last_is_current else -1
        self.consecutive_bad, self.stopped_by = 0, None
        self.health: TargetHealthChecker | None = None
        self.validations: dict[int, dict[str, float]] = {}
        max_steps = self.cfg.max_steps if self.cfg.max_steps > 0 else None
        if done := nothing_to_train(self.experiment.folder, found[0] if found else None, plan.last_is_current,
                                    bool(self.exp_cfg.resume_from_checkpoint), self.position.step, max_steps):
            self._say(done)
            return self._finish(t_start, summary=False)
        if self.info.is_main:
            self.experiment.write_recipe(self.recipe.to_yaml())  # only now: the resume has succeeded
        self._say(start_summary(self.recipe, self.experiment.folder, self.parts, self.info, self.train_loader,
                                self.train_cfg.batch_size, self.position.step))
        self.logger = ScalarLogger(self.experiment.tensorboard if self.info.is_main and self.exp_cfg.create_tensorboard_logger else None)
        self.progress = Progress(self.info.is_main, max_steps, start_step=self.position.step,
                                 live=None if self.cfg.enable_progress_bar else False)
        try:
            with StopRequest() as self.stop:
                if max_steps is None or self.position.step < max_steps:
                    self._train(plan, max_steps)
                self._settle()
                dist_utils.broadcast_buffers(self.parts.model)
                if self.saved_at != self.position.step:
                    self._save()
                self.faults.trace_final(self.info.rank, self.parts.model.state_dict())
        finally:
            self.progress.close()
            self.logger.close()
        return self._finish(t_start)

    def _train(self, plan: ResumePlan, max_steps: int | None) -> None:
        cfg, pos = self.cfg, self.position
        plan.start_generators(cfg.seed, self.info.rank)  # last, after every set-up step that might draw from them
        self.parts.model.train()
        self.wait, self.t_log = DataWait(), time.perf_counter()
        every_n = self.exp_cfg.checkpoint_callback_params.every_n_train_steps
        prepare = self.train_loader.device_augmentor if self.train_loader.augment_on_device else None
        groups = accumulation_groups(self.train_loader, pos, plan, accumulate=cfg.accumulate_grad_batches,
                                     max_epochs=cfg.max_epochs, wait=self.wait,
                                     empty_epoch=lambda: empty_epoch_error(self.train_cfg, self.info, self.train_loader))
        for group in groups:
            step = pos.step + 1
            log_now = step % cfg.log_every_n_steps == 0
            for batch in group:
                self.faults.trace_batch(self.info.rank, batch)
            skip, norm = self.runner.forward_backward(group, want_norm=log_now, poison=self.faults.nonfinite(step), prepare=prepare)
            self._settle()  # the previous step's flags, read while this step's work is queued
            self.runner.update(step, skip, stop=self.stop.requested)
            pos.step = step
            if log_now:
                self._log(norm)
            val = self._validate() if self.val_every is not None and step % self.val_every == 0 else None
            if val is not None or (every_n and step % every_n == 0):
                self._save(val.get("val_loss") if val else None, every_n=bool(every_n and step % every_n == 0))
            if self.stop.requested and not self.info.distributed:  # alone: no need to wait for the flags
                self.stopped_by = self.stop.signal_name
            if self.stopped_by is not None or (max_steps is not None and step >= max_steps):
                break

    def _settle(self) -> None:
        """Account for the last step whose flags are still unread: a skipped update, a stop request."""
        settled = self.runner.settle()
        if settled is None:
            return
        if settled.stop and self.stopped_by is None:
            self.stopped_by = self.stop.signal_name or "a stop request on another rank"
        if not settled.skipped:
            self.consecutive_bad = 0
            return
        self.consecutive_bad += 1
        self.position.nonfinite_total += 1
        self.progress.message(f"step {settled.step}: non-finite loss or gradient, update skipped ({self.consecutive_bad} in a row)")
        if self.consecutive_bad >= self.cfg.max_nonfinite_steps:
            self.runner.discard()  # the step after it is not applied: the saved state is the last settled one
            self.position.step = settled.step
            path = self._save()
            raise NestkitError(
                f"training diverged: {self.consecutive_bad} consecutive non-finite steps (up to step {settled.step}); "
                f"last good state saved to {path or self.experiment.checkpoints}; lower the learning rate or check the data")

    def _log(self, norm: torch.Tensor | None) -> None:
        self._settle()
        wall = time.perf_counter() - self.t_log
        metrics = self.metrics.read(norm, wall)
        self.t_log = time.perf_counter()
        metrics.update(run_metrics(self.parts, self.wait.take() / max(wall, 1e-9), self.position.nonfinite_total,
                                   self.train_loader.skipped))
        if self.info.is_main:
            self.logger.log(self.position.step, metrics)
            self.progress.update(self.position.step, metrics)
            self._check_health(metrics)

    def _check_health(self, metrics: dict[str, float]) -> None:
        """Warnings about the targets (collapsed, no context gain), on screen and in TensorBoard."""
        targets = self.metrics.targets
        if targets is not None:
            self.health = self.health or TargetHealthChecker(self.cfg.target_health, targets.num_classes, targets.num_books)
            for line in self.health.check(metrics):
                self.progress.message(line)
                self.logger.text(self.position.step, "warnings", line)

    def validate(self) -> float | None:
        """The validation loss now (None without a validation set or a finite loss)."""
        return self._validate().get("val_loss")

    def _validate(self) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        self._settle()
        t0 = time.perf_counter()
        val = validate(self.parts, self.val_loader, self.info, limit=self.val_limit, seed=self.cfg.seed, metrics=self.metrics)
        self.t_log += time.perf_counter() - t0  # validation time is not training throughput
        step = self.position.step
        if not val:
            self._say("warning: validation produced no finite loss (no batch, or every loss was NaN/inf)")
            return {}
        best = self.position.best_val_loss
        self.position.best_val_loss = val["val_loss"] if best is None else min(best, val["val_loss"])
        self.validations[step] = val
        if self.info.is_main:
            self.logger.log(step, val)
            self.progress.message(validation_line(step, val))
            self._check_health(val)
        return val

    def _save(self, val_loss: float | None = None, every_n: bool = False) -> Any:
        self._settle()
        state = checkpoint_state(self.parts, self.train_loader, self.info, self.position, self.recipe.to_yaml(),
                                 val_loss, self.metrics.state_dict())
        path = self.keeper.save(state, self.position.step, val_loss, every_n) if state and self.keeper else None
        self.saved_at = self.position.step  # on every rank: the end-of-run save is a collective too
        self.faults.after_checkpoint(self.position.step)
        return path

    def _finish(self, t_start: float, summary: bool = True) -> TrainResult:
        keeper, pos = self.keeper, self.position
        result = TrainResult(
            steps=pos.step, epochs=pos.epoch + (1 if pos.batches_in_epoch else 0), exp_dir=self.experiment.folder,
            last_checkpoint=keeper.last if keeper is not None and keeper.last.exists() else None,
            best_checkpoints=[p for _, _, p in keeper.best()] if keeper is not None else [],
            best_val_loss=pos.best_val_loss, wall_s=time.perf_counter() - t_start, stopped_by=self.stopped_by,
            nonfinite_steps=pos.nonfinite_total, validations=self.validations,
            last_validation=self.validations[max(self.validations)] if self.validations else {})
        skipped = RunSkips.gather(self.train_loader, self.val_loader, self.info) if summary else None  # every rank
        if skipped is not None and self.info.is_main:
            conclude(result, self.recipe, skipped, self.experiment, self._say, self.info.world_size)
        return result


def train(recipe: Any, *, devices: int | str | None = None, **kwargs: Any) -> TrainResult:
    """Train ``recipe`` in this process (one rank of a torchrun job, or alone)."""
    return Trainer(recipe, devices=devices, **kwargs).run()
