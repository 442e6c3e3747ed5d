"""What the user sees while training: a Rich progress bar on a terminal, plain lines otherwise.

Only rank 0 prints. A step line stays within 100 columns (loss, accuracy, context gain, learning
rate, ETA); every metric is in TensorBoard. The ETA comes from the pace of the last log interval,
so start-up and compilation do not inflate it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

# (metric, label, format) shown on the step line, in this order, when present.
STEP_LINE = (
    ("train_loss", "loss", ".4f"),
    ("masked_accuracy", "acc", ".3f"),
    ("context_gain", "gain", "+.3f"),
    ("learning_rate", "lr", ".2e"),
    ("audio_seconds_per_second", "audio-s/s", ".0f"),
)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def validation_line(step: int, val: dict[str, float]) -> str:
    gain = f"  context gain {val['val_context_gain']:+.3f}" if "val_context_gain" in val else ""
    return f"step {step}: val_loss {val['val_loss']:.4f}{gain}"


def step_line(metrics: dict[str, float]) -> str:
    return "  ".join(f"{label} {metrics[key]:{fmt}}" for key, label, fmt in STEP_LINE if key in metrics)


class Progress:
    """Step counter with the step line and an ETA. ``live=None`` picks the Rich bar when stdout
    is a terminal."""

    def __init__(self, enabled: bool, total_steps: int | None, start_step: int = 0,
                 live: bool | None = None, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.total = total_steps
        self.stream = stream or sys.stdout
        self.live = enabled and (self.stream.isatty() if live is None else live)
        self._mark: tuple[int, float] | None = None  # (step, time) of the last update
        self._pace: float | None = None  # seconds per step over the last interval (start-up excluded)
        self._bar: Any = None
        self._task: Any = None
        if self.live:
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn

            self._bar = RichProgress(
                TextColumn("step {task.completed}/{task.total}"), BarColumn(bar_width=20),
                TextColumn("{task.fields[info]}"), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=total_steps, completed=start_step, info="")

    def eta(self, step: int) -> float | None:
        if not self.total or self._pace is None:
            return None
        return self._pace * (self.total - step)

    def update(self, step: int, metrics: dict[str, float]) -> None:
        """Called at logging intervals with host-side numbers."""
        now = time.perf_counter()
        if self._mark is not None and step > self._mark[0]:
            self._pace = (now - self._mark[1]) / (step - self._mark[0])
        self._mark = (step, now)
        if not self.enabled:
            return
        eta = self.eta(step)
        info = step_line(metrics) + (f"  eta {format_duration(eta)}" if eta is not None else "")
        if self.live:
            self._bar.update(self._task, completed=step, info=info)
            return
        total = f"/{self.total}" if self.total else ""
        print(f"step {step}{total}  {info}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.live:
            self._bar.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def summary_block(title: str, rows: list[tuple[str, str]]) -> str:
    """A small aligned key/value block."""
    width = max((len(k) for k, _ in rows), default=0)
    lines = [title] + [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)
