"""TensorBoard scalars and text (warnings), written by rank 0 only."""

from __future__ import annotations

from pathlib import Path

from nestkit.errors import CheckpointError


class ScalarLogger:
    """Writes scalars to TensorBoard event files under ``folder`` (nothing when disabled)."""

    def __init__(self, folder: Path | None) -> None:
        self._writer = None
        if folder is not None:
            from torch.utils.tensorboard import SummaryWriter

            try:
                folder.mkdir(parents=True, exist_ok=True)
                self._writer = SummaryWriter(log_dir=str(folder))
            except OSError as exc:
                raise CheckpointError(f"cannot write TensorBoard logs to {folder}: {exc.strerror or exc}") from None

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if self._writer is None:
            return
        for name, value in scalars.items():
            self._writer.add_scalar(name, value, global_step=step)

    def text(self, step: int, tag: str, text: str) -> None:
        if self._writer is not None:
            self._writer.add_text(tag, text, global_step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
