"""Training metrics: sums kept on the device over one log interval, read once per interval.

Every micro-batch adds its loss, masked accuracy and fraction and audio length to one device
vector; a model whose output carries targets (:class:`~nestkit.train.contracts.MaskedTokenOutput`)
also feeds :class:`~nestkit.health.target_stats.TargetStatistics`. At a log step all of it is
summed over ranks in one all-reduce and read in one host transfer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nestkit.health.target_stats import TargetStatistics
from nestkit.train import distributed as dist_utils
from nestkit.train.contracts import MaskedTokenOutput, TrainBatch, TrainingOutput
from nestkit.train.setup import TrainingParts

_SUMS = ("loss", "finite", "accuracy", "fraction", "outputs", "audio_samples")


def _target_shape(out: MaskedTokenOutput) -> tuple[int, int]:
    """(classes, codebooks) of a masked-token output."""
    return int(out.log_probs.shape[2]), int(out.tokens.shape[2]) if out.tokens.dim() == 3 else 1


class TrainMetrics:
    """The trainer's device-side metrics; :meth:`add` is the step's output sink."""

    def __init__(self, device: torch.device, sample_rate: int, distributed: bool = False) -> None:
        self.device, self.sample_rate, self.distributed = device, sample_rate, distributed
        self.sums = torch.zeros(len(_SUMS), dtype=torch.float64, device=device)
        self._one = torch.ones((), dtype=torch.float64, device=device)
        self.targets: TargetStatistics | None = None
        self._saved_targets: dict[str, Any] | None = None  # from a checkpoint, until the first output
        self.audio_total_s = 0.0  # all ranks' audio trained on, this process's run

    def add(self, out: TrainingOutput, batch: TrainBatch, finite: Tensor) -> None:
        loss = out.loss.detach().double()
        self.sums += torch.stack([
            torch.where(finite, loss, torch.zeros_like(loss)), finite.double(),
            out.masked_accuracy.detach().double(), out.masked_fraction.detach().double(), self._one,
            batch.audio_len.sum().double(),
        ])
        if isinstance(out, MaskedTokenOutput):
            self.target_statistics(out).update(out.tokens, out.log_probs.detach(), out.token_mask, out.token_valid)

    def target_statistics(self, out: MaskedTokenOutput) -> TargetStatistics:
        """The training target statistics, created for the first output's codebooks."""
        if self.targets is None:
            classes, books = _target_shape(out)
            self.targets = TargetStatistics(classes, books, self.device)
            if self._saved_targets is not None:
                self.targets.load_state_dict(self._saved_targets)
        return self.targets

    def read(self, norm: Tensor | None, wall_s: float) -> dict[str, float]:
        """All ranks' sums of the last ``wall_s`` seconds as metrics (the one host read of an
        interval); starts the next interval."""
        packed = self.sums if self.targets is None else torch.cat([self.sums, self.targets.window_tensor()])
        if self.distributed:
            dist_utils.all_reduce_sum_(packed)
        tail = [norm.detach().double().reshape(1)] if norm is not None else []
        values = torch.cat([packed, *tail]).tolist()
        loss, finite, acc, frac, outputs, audio = values[: len(_SUMS)]
        metrics = {"train_loss": loss / finite if finite else float("nan")}
        if norm is not None:
            metrics["grad_norm"] = values[-1]
        if outputs:
            metrics["masked_accuracy"] = acc / outputs
            metrics["masked_fraction"] = frac / outputs
        if self.targets is not None:
            n = self.targets.size
            metrics.update(self.targets.summarize(values[len(_SUMS): len(_SUMS) + n]))
            self.targets.reset_window(packed[len(_SUMS):] if self.distributed else None)
        metrics["audio_seconds_per_second"] = audio / self.sample_rate / max(wall_s, 1e-9)
        self.audio_total_s += audio / self.sample_rate
        self.sums.zero_()
        return metrics

    def state_dict(self) -> dict[str, Any] | None:
        return self.targets.state_dict() if self.targets is not None else self._saved_targets

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self._saved_targets = state
        if self.targets is not None and state is not None:
            self.targets.load_state_dict(state)


def run_metrics(parts: TrainingParts, data_wait_fraction: float, nonfinite_total: int, skipped: dict[str, int]) -> dict[str, float]:
    """The host-side metrics of a log interval: learning rate, data wait, skipped steps and items, GPU memory."""
    metrics = {
        "learning_rate": float(parts.optimizer.param_groups[0]["lr"]),
        "data_wait_fraction": min(1.0, data_wait_fraction),
        "nonfinite_steps": float(nonfinite_total),
        **{f"skipped_items/{reason}": float(n) for reason, n in skipped.items()},
        "skipped_items/total": float(sum(skipped.values())),
    }
    if parts.device.type == "cuda":
        metrics["gpu_memory_gb"] = torch.cuda.max_memory_allocated(parts.device) / 2**30
    return metrics
