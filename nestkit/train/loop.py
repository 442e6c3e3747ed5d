"""The training loop: optimizer steps, validation, checkpoints and resume, on one or many ranks.

One optimizer step consumes ``accumulate_grad_batches`` batches. Metrics stay on the device
and are read once per ``log_every_n_steps``; the only per-step host sync is one small flag
(non-finite loss, stop request) that every rank agrees on, so a NaN or a Ctrl-C on one rank
cannot leave the others waiting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nestkit.errors import DataError, NestkitError, RecipeError
from nestkit.models.encoder_blocks import checkpoint_encoder_layers, compile_encoder_layers
from nestkit.train import checkpoint as ckpt
from nestkit.train import distributed as dist_utils
from nestkit.train import rng
from nestkit.train.experiment import Experiment
from nestkit.train.faults import Faults
from nestkit.train.logging import ScalarLogger
from nestkit.train.progress import Progress, summary_block

LoaderFactory = Callable[..., Any]


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


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves and exits at the next step boundary."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def normalise_precision(value: Any) -> str:
    text = str(value)
    return {"32": "32", "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed", "16": "16-mixed", "16-mixed": "16-mixed"}[text]


def _forward(model: torch.nn.Module, batch: Any, apply_mask: bool) -> Any:
    return model(
        batch.audio, batch.audio_len, noisy_audio=batch.noisy_audio, noisy_audio_len=batch.noisy_audio_len,
        apply_mask=apply_mask,
    )


def _first_attr(obj: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _masked_stats(out: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(masked-token accuracy, masked fraction) from the model's output, as 0-dim device tensors."""
    acc = _first_attr(out, ("masked_accuracy", "accuracy", "masked_acc"))
    frac = _first_attr(out, ("masked_fraction", "mask_fraction", "masked_frac"))
    if acc is None or frac is None:
        return None
    return acc.detach().float(), frac.detach().float()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


class Trainer:
    """Runs one experiment from a validated recipe. Build with :meth:`from_recipe`."""

    def __init__(
        self,
        recipe: Any,
        *,
        devices: int | str | None = None,
        model: torch.nn.Module | None = None,
        loader_factory: LoaderFactory | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.recipe = recipe
        self.cfg = recipe.trainer
        self.exp_cfg = recipe.exp_manager
        self.devices = devices if devices is not None else self.cfg.devices
        self.precision = normalise_precision(self.cfg.precision)
        self._model_override = model
        self._loader_factory = loader_factory
        self._announce = announce
        if self.cfg.max_steps <= 0 and self.cfg.max_epochs is None:
            raise RecipeError("set trainer.max_steps or trainer.max_epochs (training would never end)", key="trainer.max_steps")
        self.faults = Faults.from_env()

    # ------------------------------------------------------------------ set-up

    def _say(self, text: str) -> None:
        if self.info.is_main:
            if self._announce is not None:
                self._announce(text)
            else:
                print(text, flush=True)

    def _build(self) -> None:
        import nestkit

        cfg = self.cfg
        rng.seed_everything(cfg.seed)
        torch.backends.cudnn.benchmark = cfg.benchmark
        model = self._model_override if self._model_override is not None else nestkit.build_model(self.recipe)
        model = model.to(self.info.device)
        if self.info.distributed and cfg.sync_batchnorm and self.info.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if cfg.activation_checkpointing and not checkpoint_encoder_layers(model, cfg.activation_checkpointing):
            raise RecipeError("trainer.activation_checkpointing: this model's encoder has no `layers` list", key="trainer.activation_checkpointing")
        if cfg.compile or (cfg.compile is None and self.info.device.type == "cuda"):
            if not compile_encoder_layers(model) and cfg.compile:
                raise RecipeError("trainer.compile: this model's encoder has no `layers` list to compile", key="trainer.compile")
            if cfg.compile is None:  # not asked for: a compiler failure falls back to eager, with a warning
                from torch._dynamo import config as dynamo_config

                dynamo_config.suppress_errors = True
        self.model = model
        if self.info.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp: torch.nn.Module = DDP(
                model,
                device_ids=[self.info.device.index] if self.info.device.type == "cuda" else None,
                find_unused_parameters=cfg.strategy == "ddp_find_unused_parameters_true",
            )
        else:
            self.ddp = model
        if self.recipe.optimizer_section is None:
            raise RecipeError("no optimizer: add model.optim with name: adamw (or adam, sgd)", key="model.optim")
        self.optimizer = nestkit.build("optimizer", self.recipe.optimizer_section, params=list(model.named_parameters()))
        self.scheduler = None
        if self.recipe.scheduler_section is not None:
            try:
                self.scheduler = nestkit.build(
                    "scheduler", self.recipe.scheduler_section, optimizer=self.optimizer,
                    trainer_max_steps=cfg.max_steps if cfg.max_steps > 0 else None,
                )
            except ValueError as exc:
                raise RecipeError(str(exc), key="model.optim.sched") from None
        self.scaler = None
        if self.precision == "16-mixed":
            self.scaler = torch.amp.GradScaler(self.info.device.type)
        if self.precision == "bf16-mixed" and self.info.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise NestkitError("trainer.precision bf16-mixed: this GPU has no bfloat16 support (use 16-mixed)")

    def _loaders(self) -> None:
        from nestkit.train.data import resolve_datasets

        sets = resolve_datasets(self.recipe)
        if sets.note:
            self._say(sets.note)
        factory = self._loader_factory
        if factory is None:
            from nestkit.data import build_dataloader as factory  # type: ignore[no-redef]
        sr = sets.train.sample_rate
        self.sample_rate = sr
        common = {"sample_rate": sr, "seed": self.cfg.seed, "rank": self.info.rank, "world_size": self.info.world_size}
        self.train_loader = factory(sets.train, train=True, epoch=0, **common)
        self.val_loader = factory(sets.validation, train=False, epoch=0, **common) if sets.validation is not None else None
        self.train_cfg = sets.train
        self._device_augment = bool(getattr(self.train_loader, "augment_on_device", False))

    # ------------------------------------------------------------------ checkpoints

    def _state(self, val_loss: float | None) -> dict[str, Any] | None:
        """The checkpoint dict on rank 0 (None elsewhere); every rank must call this (RNG gather)."""
        loader_state = self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None
        per_rank = dist_utils.gather_objects({"rng": rng.capture(), "loader": loader_state}, self.info.world_size)
        if not self.info.is_main:
            return None
        return {
            "format": ckpt.FORMAT,
            "version": ckpt.VERSION,
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "world_size": self.info.world_size,
            "per_rank": per_rank,
            "val_loss": val_loss,
            "best_val_loss": self.best_val_loss,
            "nonfinite_total": self.nonfinite_total,
            "recipe": self.recipe.to_yaml(),
        }

    def _save(self, val_loss: float | None = None, every_n: bool = False) -> Path | None:
        state = self._state(val_loss)
        path = None
        if state is not None and self.keeper is not None:
            if every_n:
                self.keeper.save_step(state, self.step)
            if val_loss is not None:
                self.keeper.save_best(state, self.step, val_loss)
            path = self.keeper.save_last(state)
        self.saved_at = self.step  # on every rank: the end-of-run save is a collective too
        self.faults.after_checkpoint(self.step)
        return path

    def _find_resume(self) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint to continue from, read (and checked) before anything heavy is built."""
        explicit = self.exp_cfg.resume_from_checkpoint
        if explicit:
            return Path(explicit), ckpt.load_checkpoint(explicit)
        if not (self.exp_cfg.resume_if_exists and self.keeper is not None):
            return None
        found = ckpt.find_resume(self.keeper.folder)
        if found is None:
            if not self.exp_cfg.resume_ignore_no_checkpoint:
                raise ckpt.CheckpointError(
                    f"no checkpoint to resume in {self.keeper.folder} "
                    "(set exp_manager.resume_ignore_no_checkpoint=true to start fresh)"
                )
            return None
        path, state, damaged = found
        for reason in damaged:
            self._say(f"note: skipped an unreadable checkpoint: {reason}")
        return path, state

    def _resume(self, found: tuple[Path, dict[str, Any]] | None) -> None:
        if found is None:
            self._rng_start = None
            return
        path, state = found
        if "optimizer" not in state:  # a model-only checkpoint (import-nemo, save_model): initialise from it
            try:
                _unwrap(self.model).load_state_dict(state["model"])
            except RuntimeError as exc:
                text = " ".join(str(exc).split())[:200]
                raise ckpt.CheckpointError(f"{path} does not match this recipe's model: {text}") from None
            self._rng_start = None
            self._say(f"initialised the model from {path} (weights only); training starts at step 0")
            return
        try:
            _unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler") is not None:
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            text = " ".join(str(exc).split())[:200]
            raise ckpt.CheckpointError(f"{path} does not match this recipe's model or optimizer: {text}") from None
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batches_in_epoch = int(state["batches_in_epoch"])
        self.best_val_loss = state.get("best_val_loss")
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        # last.ckpt holds this state only when it is what we resumed from. A newer step file (a kill
        # between it and last.ckpt) or an outside checkpoint must be saved again, even with no step left.
        self.saved_at = self.step if self.keeper is not None and path == self.keeper.last else -1
        per_rank = state.get("per_rank") or []
        if state.get("world_size") == self.info.world_size and len(per_rank) == self.info.world_size:
            mine = per_rank[self.info.rank]
            self._rng_start = mine["rng"]
            if mine.get("loader") is not None and hasattr(self.train_loader, "load_state_dict"):
                self.train_loader.load_state_dict(mine["loader"])
                self._skip_batches = 0
                self._loader_restored = True
            else:
                self._skip_batches = self.batches_in_epoch
        else:
            self._say(f"note: world size changed ({state.get('world_size')} -> {self.info.world_size}): data order and random state restart from step {self.step}")
            self._rng_start = None
            self._rng_offset = 7919 * self.step
            self.epoch += 1 if self.batches_in_epoch else 0
            self.batches_in_epoch = 0
        self._say(f"resumed from {path} at step {self.step} (epoch {self.epoch})")

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> float | None:
        if self.val_loader is None:
            return None
        model = _unwrap(self.model)
        was_training = model.training
        model.eval()
        total = torch.zeros(2, device=self.info.device, dtype=torch.float64)
        limit = self.cfg.limit_val_batches
        n_batches = None
        if isinstance(limit, float) and limit <= 1.0:
            if limit < 1.0 and hasattr(self.val_loader, "__len__"):
                n_batches = max(1, int(len(self.val_loader) * limit))
        else:
            n_batches = int(limit)
        if n_batches == 0:
            return None
        if hasattr(self.val_loader, "set_epoch"):
            self.val_loader.set_epoch(0)  # every validation sees the same batches from the start
        # The same masks at every validation (so val_loss values compare), drawn from a forked
        # generator so validation never shifts the training random stream.
        with torch.random.fork_rng(devices=[self.info.device] if self.info.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed + 1_000_003 * (self.info.rank + 1))
            for i, batch in enumerate(self.val_loader):
                if n_batches is not None and i >= n_batches:
                    break
                batch = batch.to(self.info.device, non_blocking=True)
                if getattr(self.val_loader, "augment_on_device", False):
                    batch = self.val_loader.device_augmentor(batch)
                with _autocast(self.info.device, self.precision):
                    out = _forward(model, batch, apply_mask=True)
                loss = out.loss.detach().double()
                total += torch.stack([torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss)), torch.isfinite(loss).double()])
        dist_utils.all_reduce_sum_(total)
        model.train(was_training)
        loss_sum, count = total.tolist()
        if not count:
            self._say("warning: validation produced no finite loss (no batch, or every loss was NaN/inf)")
            return None
        return loss_sum / count

    # ------------------------------------------------------------------ main loop

    def _batches(self) -> Iterator[list[Any]]:
        """Groups of ``accumulate_grad_batches`` batches, epoch after epoch."""
        accum = self.cfg.accumulate_grad_batches
        while self.cfg.max_epochs is None or self.epoch < self.cfg.max_epochs:
            if self._loader_restored:
                self._loader_restored = False  # continue the restored epoch at its saved position
            elif hasattr(self.train_loader, "set_epoch"):
                self.train_loader.set_epoch(self.epoch)
            iterator = iter(self.train_loader)
            skip, self._skip_batches = self._skip_batches, 0
            for _ in range(skip):
                next(iterator, None)
            seen_any = self.batches_in_epoch > 0
            while True:
                t0 = time.perf_counter()
                group = []
                for batch in iterator:
                    group.append(batch)
                    if len(group) == accum:
                        break
                self.data_wait += time.perf_counter() - t0
                if not group:
                    break
                seen_any = True
                self.batches_in_epoch += len(group)
                yield group
            if not seen_any:
                raise DataError(
                    f"model.train_ds yields no batch on rank {self.info.rank}: too few usable utterances for "
                    f"batch_size {self.train_cfg.batch_size} (drop_last={self.train_cfg.drop_last}) across "
                    f"{self.info.world_size} process(es); lower the batch size or add data"
                )
            self.epoch += 1
            self.batches_in_epoch = 0

    def _train_step(self, group: list[Any], want_norm: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward/backward over the group; returns (non-finite flag, grad norm or None) on the device."""
        dev = self.info.device
        nonfinite = torch.zeros((), device=dev, dtype=torch.bool)
        n = len(group)
        for i, batch in enumerate(group):
            self.faults.trace_batch(self.info.rank, batch)
            batch = batch.to(dev, non_blocking=True)
            if self._device_augment:
                batch = self.train_loader.device_augmentor(batch)
            last = i == n - 1
            sync = contextlib.nullcontext() if (last or not self.info.distributed) else self.ddp.no_sync()  # type: ignore[operator]
            with sync:
                with _autocast(dev, self.precision):
                    out = _forward(self.ddp, batch, apply_mask=True)
                loss = out.loss
                if self.faults.nonfinite(self.step):
                    loss = loss * float("nan")
                scaled = loss / n
                if self.scaler is not None:
                    scaled = self.scaler.scale(scaled)
                scaled.backward()
            finite = torch.isfinite(loss.detach())
            nonfinite |= ~finite
            lf = loss.detach().float()
            self.m_loss += torch.where(finite, lf, torch.zeros_like(lf))
            self.m_count += finite.float()
            stats = _masked_stats(out)
            if stats is not None:
                self.m_acc += stats[0]
                self.m_frac += stats[1]
                self.m_stats += 1
            self.m_audio += batch.audio_len.sum()
        norm = None
        clip = self.cfg.gradient_clip_val
        if (clip and clip > 0) or want_norm:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
                self._unscaled = True
            params = [p for p in self.model.parameters() if p.grad is not None]
            if clip and clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, clip)
            else:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for p in params]))
            if self.scaler is None:
                nonfinite |= ~torch.isfinite(norm)
        return nonfinite, norm

    def _reset_metrics(self) -> None:
        dev = self.info.device
        self.m_loss = torch.zeros((), device=dev)
        self.m_count = torch.zeros((), device=dev)
        self.m_acc = torch.zeros((), device=dev)
        self.m_frac = torch.zeros((), device=dev)
        self.m_stats = torch.zeros((), device=dev)
        self.m_audio = torch.zeros((), device=dev, dtype=torch.int64)
        self.data_wait = 0.0
        self.t_log = time.perf_counter()

    def _log(self, norm: torch.Tensor | None) -> dict[str, float]:
        values = torch.stack([
            self.m_loss.float(), self.m_count.float(), self.m_acc.float(), self.m_frac.float(), self.m_stats.float(),
            self.m_audio.double().float(), (norm.detach().float() if norm is not None else torch.zeros((), device=self.info.device)),
        ]).tolist()
        loss, count, acc, frac, nstats, audio, grad_norm = values
        wall = max(time.perf_counter() - self.t_log, 1e-9)
        metrics: dict[str, float] = {"train_loss": loss / count if count else float("nan")}
        metrics["learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
        if norm is not None:
            metrics["grad_norm"] = grad_norm
        if nstats:
            metrics["masked_accuracy"] = acc / nstats
            metrics["masked_fraction"] = frac / nstats
        metrics["audio_seconds_per_second"] = audio / self.sample_rate / wall * self.info.world_size
        metrics["data_wait_fraction"] = min(1.0, self.data_wait / wall)
        metrics["nonfinite_steps"] = float(self.nonfinite_total)
        skipped = getattr(self.train_loader, "skipped", None)
        if isinstance(skipped, dict):
            for reason, n in skipped.items():
                metrics[f"skipped_items/{reason}"] = float(n)
            metrics["skipped_items/total"] = float(sum(skipped.values()))
        if self.info.device.type == "cuda":
            metrics["gpu_memory_gb"] = torch.cuda.max_memory_allocated(self.info.device) / 2**30
        self.audio_total_s += audio / self.sample_rate * self.info.world_size
        self._reset_metrics()
        return metrics

    def _val_interval(self) -> int | None:
        if self.val_loader is None:
            return None
        interval = self.cfg.val_check_interval
        if isinstance(interval, float) and interval <= 1.0:
            if not hasattr(self.train_loader, "__len__"):
                raise RecipeError("a fractional val_check_interval needs a loader with a known length; give a step count", key="trainer.val_check_interval")
            return max(1, int(len(self.train_loader) * interval / self.cfg.accumulate_grad_batches))
        return int(interval)

    def run(self) -> TrainResult:
        """Train to the end (or to a stop request) and return what happened."""
        t_start = time.perf_counter()
        self.info = dist_utils.setup(self.devices, self.cfg.accelerator)
        try:
            return self._run(t_start)
        except RuntimeError as exc:
            raise self._explain(exc) from None
        finally:
            dist_utils.teardown()

    def _explain(self, exc: RuntimeError) -> BaseException:
        """A crash of another process, as the one line a user needs; anything else unchanged."""
        first = " ".join(str(exc).split())[:200]
        if "DataLoader worker" in first:
            return DataError(f"a data-loading worker process died ({first}); the last checkpoint is intact: "
                             "rerun the same command to resume")
        if self.info.distributed and dist_utils.is_peer_failure(exc):
            if os.environ.get(dist_utils.LAUNCHED_ENV):
                return SystemExit(dist_utils.PEER_LOST_EXIT)  # the launcher names the rank that died
            return NestkitError(f"rank {self.info.rank} lost contact with another training process ({first}); "
                                "rerun to resume from the last checkpoint")
        return exc

    def _run(self, t_start: float) -> TrainResult:
        self.step = self.epoch = self.batches_in_epoch = 0
        self.best_val_loss: float | None = None
        self.nonfinite_total = 0
        self.saved_at = -1
        self._skip_batches = 0
        self._loader_restored = False
        self._rng_start: dict[str, Any] | None = None
        self._rng_offset = 0
        self.audio_total_s = 0.0
        self.experiment = Experiment.create(self.recipe, main=self.info.is_main)
        self.keeper = (
            ckpt.CheckpointKeeper(
                self.experiment.checkpoints,
                save_top_k=self.exp_cfg.checkpoint_callback_params.save_top_k,
                mode=self.exp_cfg.checkpoint_callback_params.mode,
            )
            if self.exp_cfg.create_checkpoint_callback
            else None
        )
        found = self._find_resume()
        self._build()
        self._loaders()
        self._resume(found)
        logger = ScalarLogger(self.experiment.tensorboard if self.info.is_main and self.exp_cfg.create_tensorboard_logger else None)
        max_steps = self.cfg.max_steps if self.cfg.max_steps > 0 else None
        self._say(self._start_summary())
        progress = Progress(self.info.is_main, max_steps, start_step=self.step, live=None if self.cfg.enable_progress_bar else False)
        val_every = self._val_interval()
        every_n = self.exp_cfg.checkpoint_callback_params.every_n_train_steps
        stopped_by: str | None = None
        consecutive_bad = 0
        self._unscaled = False
        self.model.train()
        self._reset_metrics()
        # Random state last, after every import and set-up step that might draw from it.
        if self._rng_start is not None:
            rng.restore(self._rng_start)
        else:
            rng.seed_everything(self.cfg.seed + self.info.rank + self._rng_offset)
        flag = torch.zeros(2, device=self.info.device)
        try:
            with _StopRequest() as stop:
                if max_steps is None or self.step < max_steps:
                    for group in self._batches():
                        self.step += 1
                        log_now = self.step % self.cfg.log_every_n_steps == 0
                        self._unscaled = False
                        nonfinite, norm = self._train_step(group, want_norm=log_now)
                        flag[0] = nonfinite.float()
                        flag[1] = 1.0 if stop.signal_name else 0.0
                        dist_utils.all_reduce_max_(flag)
                        bad, stop_all = flag.tolist()  # the one host sync of a step
                        if bad:
                            self.optimizer.zero_grad(set_to_none=True)
                            if self.scaler is not None and self._unscaled:
                                self.scaler.update()
                            consecutive_bad += 1
                            self.nonfinite_total += 1
                            progress.message(f"step {self.step}: non-finite loss or gradient, update skipped ({consecutive_bad} in a row)")
                            if consecutive_bad >= self.cfg.max_nonfinite_steps:
                                path = self._save()
                                raise NestkitError(
                                    f"training diverged: {consecutive_bad} consecutive non-finite steps (up to step {self.step}); "
                                    f"last good state saved to {path or self.experiment.checkpoints}; lower the learning rate or check the data"
                                )
                        else:
                            consecutive_bad = 0
                            if self.scaler is not None:
                                self.scaler.step(self.optimizer)
                                self.scaler.update()
                            else:
                                self.optimizer.step()
                            self.optimizer.zero_grad(set_to_none=True)
                            if self.scheduler is not None:
                                self.scheduler.step()
                        if log_now:
                            metrics = self._log(norm)
                            if self.info.is_main:
                                logger.log(self.step, metrics)
                                progress.update(self.step, metrics)
                        val_loss = None
                        validated = val_every is not None and self.step % val_every == 0
                        if validated:
                            val_loss = self.validate()
                            if val_loss is not None and val_loss == val_loss:
                                if self.best_val_loss is None or val_loss < self.best_val_loss:
                                    self.best_val_loss = val_loss
                            if self.info.is_main and val_loss is not None:
                                logger.log(self.step, {"val_loss": val_loss})
                                progress.message(f"step {self.step}: val_loss {val_loss:.4f}")
                        if validated or (every_n and self.step % every_n == 0):
                            self._save(val_loss, every_n=bool(every_n and self.step % every_n == 0))
                        if stop_all:
                            stopped_by = stop.signal_name or "a stop request on another rank"
                            break
                        if max_steps is not None and self.step >= max_steps:
                            break
                dist_utils.broadcast_buffers(_unwrap(self.model))
                if self.saved_at != self.step:
                    self._save()
                self.faults.trace_final(self.info.rank, _unwrap(self.model).state_dict())
        finally:
            progress.close()
            logger.close()
        result = TrainResult(
            steps=self.step, epochs=self.epoch + (1 if self.batches_in_epoch else 0), exp_dir=self.experiment.folder,
            last_checkpoint=self.keeper.last if self.keeper is not None and self.keeper.last.exists() else None,
            best_checkpoints=[p for _, _, p in self.keeper.best()] if self.keeper is not None else [],
            best_val_loss=self.best_val_loss, wall_s=time.perf_counter() - t_start, stopped_by=stopped_by,
            nonfinite_steps=self.nonfinite_total,
        )
        self._say(self._end_summary(result))
        return result

    # ------------------------------------------------------------------ summaries

    def _start_summary(self) -> str:
        model = _unwrap(self.model)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        describe = getattr(self.train_loader, "describe", None)
        hours = getattr(self.train_loader, "hours", None)
        hours_text = describe() if callable(describe) else (f"{hours:.2f} h" if isinstance(hours, (int, float)) else "unknown")
        dev = self.info.device
        devices = f"{self.info.world_size} x {dev.type}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
        limit = []
        if self.cfg.max_steps > 0:
            limit.append(f"{self.cfg.max_steps} steps")
        if self.cfg.max_epochs is not None:
            limit.append(f"{self.cfg.max_epochs} epochs")
        rows = [
            ("recipe", f"{self.recipe.name} ({self.recipe.source})"),
            ("experiment", str(self.experiment.folder)),
            ("devices", devices),
            ("precision", self.precision),
            ("parameters", f"{total:,} ({trainable:,} trainable)"),
            ("train data", hours_text),
            ("length", " or ".join(limit)),
            ("batch", f"{self.train_cfg.batch_size} x {self.cfg.accumulate_grad_batches} accumulation x {self.info.world_size} ranks"),
        ]
        if self.step:
            rows.append(("resuming at", f"step {self.step}"))
        return summary_block("nestkit train", rows)

    def _end_summary(self, r: TrainResult) -> str:
        rows = [
            ("steps", str(r.steps)),
            ("time", f"{r.wall_s:.1f} s"),
            ("best val_loss", f"{r.best_val_loss:.4f}" if r.best_val_loss is not None else "n/a"),
            ("last checkpoint", str(r.last_checkpoint) if r.last_checkpoint else "none"),
        ]
        if r.best_checkpoints:
            rows.append(("best checkpoints", ", ".join(p.name for p in r.best_checkpoints)))
        if r.nonfinite_steps:
            rows.append(("skipped steps", f"{r.nonfinite_steps} (non-finite)"))
        if r.stopped_by:
            rows.append(("stopped by", r.stopped_by))
        return summary_block("done" if not r.stopped_by else "stopped", rows)


def train(recipe: Any, *, devices: int | str | None = None, **kwargs: Any) -> TrainResult:
    """Train ``recipe`` in this process (one rank of a torchrun job, or alone)."""
    return Trainer(recipe, devices=devices, **kwargs).run()
