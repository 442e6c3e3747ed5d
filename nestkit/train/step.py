"""One optimizer step: forward and backward over an accumulation group, gradient clipping, and
the update, which is skipped on the device when the loss or the gradients are not finite.

The host reads nothing while a step runs. The step's flags (non-finite, stop request) are agreed
by all ranks with one all-reduce on the device and copied to host memory without waiting. The
host reads them one step later, once the next step's forward and backward are queued, so the
device always has work. The scheduler advances when the host learns that a step was good,
before the next update, so each update uses the learning rate a synchronous loop would give it.

A step is three calls, the same in ``nestkit train`` and ``nestkit bench``:
:meth:`StepRunner.forward_backward`, :meth:`StepRunner.settle` (the previous step's flags) and
:meth:`StepRunner.update`. :meth:`StepRunner.step` makes all three.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nestkit.train import distributed as dist_utils
from nestkit.train.contracts import TrainBatch, TrainingOutput
from nestkit.train.setup import TrainingParts

OutputSink = Callable[[TrainingOutput, TrainBatch, Tensor], None]  # (output, batch, finite) -> None


@dataclass(frozen=True)
class Settled:
    """A finished step, as the host learned it."""

    step: int
    skipped: bool  # the loss or the gradients were not finite on some rank: no update happened
    stop: bool  # some rank asked to stop (SIGINT/SIGTERM)


class _StepFlags:
    """A step's flags on the device, and their copy in host memory, read one step later."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.values = torch.zeros(2, device=device)
        self.host = torch.zeros(2, pin_memory=device.type == "cuda")
        self.ready: torch.cuda.Event | None = None
        self.step: int | None = None

    def push(self, step: int, skipped: Tensor, stop: bool, distributed: bool) -> None:
        self.values[0].copy_(skipped)
        self.values[1].fill_(1.0 if stop else 0.0)
        if distributed:
            dist_utils.all_reduce_max_(self.values)
        self.host.copy_(self.values, non_blocking=True)
        if self.device.type == "cuda":
            self.ready = torch.cuda.Event()
            self.ready.record()
        self.step = step

    def pop(self) -> Settled | None:
        if self.step is None:
            return None
        if self.ready is not None:
            self.ready.synchronize()  # waits for that step only: the next one is already queued
        skipped, stop = self.host.numpy().tolist()
        settled = Settled(self.step, bool(skipped), bool(stop))
        self.step, self.ready = None, None
        return settled


class StepRunner:
    """Runs training steps on :class:`TrainingParts`; ``sink`` receives each micro-batch's output
    (the trainer's device-side metrics)."""

    def __init__(self, parts: TrainingParts, sink: OutputSink | None = None, gradient_clip_val: float | None = None) -> None:
        self.parts = parts
        self.sink = sink
        self.clip = gradient_clip_val if gradient_clip_val and gradient_clip_val > 0 else None
        self._flags = _StepFlags(parts.device)
        # Fused torch optimizers (nestkit's default) skip an update on the device given `found_inf`,
        # leaving weights and state untouched (GradScaler uses the same hook). Others need the host
        # to decide: one read per step.
        self.skips_on_device = bool(getattr(parts.optimizer, "_step_supports_amp_scaling", False))

    def forward_backward(
        self,
        group: Sequence[TrainBatch],
        *,
        want_norm: bool = False,
        poison: bool = False,
        prepare: Callable[[TrainBatch], TrainBatch] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Gradients of the mean loss over ``group``; returns the skip flag (the loss or a gradient is
        not finite) and, when clipping or ``want_norm``, the gradient norm, as device tensors.
        ``prepare`` runs on each batch once it is on the device (augmentation); ``poison`` makes the
        loss NaN (fault-injection tests)."""
        parts = self.parts
        skip = torch.zeros((), device=parts.device, dtype=torch.bool)
        n = len(group)
        for i, batch in enumerate(group):
            batch = batch.to(parts.device, non_blocking=True)
            if prepare is not None:
                batch = prepare(batch)
            accumulate = parts.distributed and i < n - 1
            with parts.module.no_sync() if accumulate else contextlib.nullcontext():  # type: ignore[operator]
                with parts.autocast():
                    out = parts.module(
                        batch.audio, batch.audio_len, noisy_audio=batch.noisy_audio,
                        noisy_audio_len=batch.noisy_audio_len, apply_mask=True,
                    )
                loss = out.loss * float("nan") if poison else out.loss
                scaled = loss / n
                if parts.scaler is not None:
                    scaled = parts.scaler.scale(scaled)
                scaled.backward()
            finite = torch.isfinite(loss.detach())
            skip |= ~finite
            if self.sink is not None:
                self.sink(out, batch, finite)
        wanted = self.clip is not None or want_norm
        if parts.scaler is not None:  # fp16: the scaler finds non-finite gradients and skips on its own
            if not wanted:
                return skip, None
            parts.scaler.unscale_(parts.optimizer)
            return skip, self._gradient_norm()
        # Every step: a finite loss can still have non-finite gradients (an overflow in backward),
        # and those must not reach the weights either. One fused pass over the gradients.
        norm = self._gradient_norm()
        skip |= ~torch.isfinite(norm)
        return skip, norm if wanted else None

    def _gradient_norm(self) -> Tensor:
        """The gradients' total 2-norm; clips them to ``gradient_clip_val`` when it is set."""
        params = [p for p in self.parts.model.parameters() if p.grad is not None]
        if self.clip is not None:
            return torch.nn.utils.clip_grad_norm_(params, self.clip)
        return torch.nn.utils.get_total_norm(p.grad for p in params)

    def settle(self) -> Settled | None:
        """The previous step's flags (None if already read); advances the scheduler past it when
        its update happened."""
        settled = self._flags.pop()
        if settled is not None and not settled.skipped and self.parts.scheduler is not None:
            self.parts.scheduler.step()
        return settled

    def update(self, step: int, skip: Tensor, stop: bool = False) -> None:
        """The optimizer update of ``step`` unless ``skip``; then its flags go to the host."""
        parts, opt = self.parts, self.parts.optimizer
        if parts.scaler is not None:
            parts.scaler.step(opt)  # skips on its own when the unscaled gradients are not finite
            parts.scaler.update()
        elif self.skips_on_device:
            opt.found_inf = skip.float()  # type: ignore[attr-defined]
            opt.grad_scale = None  # type: ignore[attr-defined]
            try:
                opt.step()
            finally:
                del opt.found_inf, opt.grad_scale  # type: ignore[attr-defined]
        elif not bool(skip):  # an optimizer that cannot skip on the device: the host decides
            opt.step()
        opt.zero_grad(set_to_none=True)
        self._flags.push(step, skip, stop, parts.distributed)

    def discard(self) -> None:
        """Drop the gradients of a step that will not be applied."""
        self.parts.optimizer.zero_grad(set_to_none=True)

    def step(self, step: int, group: Sequence[TrainBatch], **kwargs: Any) -> Settled | None:
        """forward_backward, settle, update: one whole step; the previous step's flags."""
        skip, _ = self.forward_backward(group, **kwargs)
        settled = self.settle()
        self.update(step, skip)
        return settled
