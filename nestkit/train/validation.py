"""Validation: the masked-token loss on held-out audio, with the same masks every time.

The masks come from a forked generator with a fixed seed, so val_loss values compare across
validations and validating never shifts the training random stream. Target statistics of
validation are scored against the training targets' frequencies (``val_unigram_loss``,
``val_context_gain``).
"""

from __future__ import annotations

from typing import Any

import torch

from nestkit.errors import RecipeError
from nestkit.train import distributed as dist_utils
from nestkit.train.contracts import MaskedTokenOutput, TrainLoader
from nestkit.train.distributed import DistInfo
from nestkit.train.metrics import TrainMetrics
from nestkit.train.setup import TrainingParts


def batch_limit(limit: int | float, loader: TrainLoader) -> int | None:
    """How many batches one validation reads (None: all) from ``trainer.limit_val_batches``."""
    if isinstance(limit, float) and limit <= 1.0:
        if limit == 1.0:
            return None
        total = loader.num_batches()
        if total is None:
            raise RecipeError("a fractional limit_val_batches needs a validation set of known length (tarred and Lhotse data "
                              "have none); "
                              "give a number of batches", key="trainer.limit_val_batches")
        return max(1, int(total * limit))
    return int(limit)


def validation_interval(interval: int | float, accumulate: int, train_loader: TrainLoader) -> int:
    """Steps between validations from ``trainer.val_check_interval`` (a float <= 1: of an epoch)."""
    if isinstance(interval, float) and interval <= 1.0:
        total = train_loader.num_batches()
        if total is None:
            raise RecipeError("a fractional val_check_interval needs training data of known length (tarred and Lhotse data "
                              "have none); "
                              "give a step count", key="trainer.val_check_interval")
        return max(1, int(total * interval / accumulate))
    return int(interval)


def validation_schedule(cfg: Any, train_loader: TrainLoader, val_loader: TrainLoader | None) -> tuple[int | None, int | None]:
    """(batches per validation or None for all, steps between validations or None for never)."""
    if val_loader is None:
        return 0, None
    return batch_limit(cfg.limit_val_batches, val_loader), validation_interval(cfg.val_check_interval, cfg.accumulate_grad_batches, train_loader)


@torch.no_grad()
def validate(
    parts: TrainingParts, loader: TrainLoader, info: DistInfo, *, limit: int | None, seed: int, metrics: TrainMetrics,
) -> dict[str, float]:
    """``val_loss`` (all ranks) and validation target statistics; empty when nothing was finite."""
    if limit == 0:
        return {}
    model = parts.model
    was_training = model.training
    model.eval()
    total = torch.zeros(2, device=info.device, dtype=torch.float64)
    targets = metrics.targets.validation() if metrics.targets is not None else None
    loader.set_epoch(0)  # every validation sees the same batches from the start
    with torch.random.fork_rng(devices=[info.device] if info.device.type == "cuda" else []):
        torch.manual_seed(seed + 1_000_003 * (info.rank + 1))
        for i, batch in enumerate(loader):
            if limit is not None and i >= limit:
                break
            batch = batch.to(info.device, non_blocking=True)
            if loader.augment_on_device:
                batch = loader.device_augmentor(batch)
            with parts.autocast():
                out: Any = model(batch.audio, batch.audio_len, noisy_audio=batch.noisy_audio,
                                 noisy_audio_len=batch.noisy_audio_len, apply_mask=True)
            loss = out.loss.detach().double()
            finite = torch.isfinite(loss)
            total += torch.stack([torch.where(finite, loss, torch.zeros_like(loss)), finite.double()])
            if targets is not None and isinstance(out, MaskedTokenOutput):
                targets.update(out.tokens, out.log_probs, out.token_mask, out.token_valid)
    model.train(was_training)
    packed = total if targets is None else torch.cat([total, targets.window_tensor()])
    dist_utils.all_reduce_sum_(packed)
    values = packed.tolist()
    loss_sum, count = values[:2]
    if not count:
        return {}
    result = {"val_loss": loss_sum / count}
    if targets is not None:
        result.update(targets.summarize(values[2:]))
    return result
