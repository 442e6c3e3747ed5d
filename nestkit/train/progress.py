"""What the user sees while training: a Rich progress bar on a terminal, plain lines otherwise.

Only rank 0 prints. The start and end summaries fit one screen.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_metrics(metrics: dict[str, float]) -> str:
    parts = []
    for key, value in metrics.items():
        if key in ("learning_rate",):
            parts.append(f"lr {value:.3g}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        else:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


class Progress:
    """Step counter with loss, learning rate, throughput and ETA.

    ``live=None`` picks the Rich bar when stdout is a terminal.
    """

    def __init__(self, enabled: bool, total_steps: int | None, start_step: int = 0,
                 live: bool | None = None, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.total = total_steps
        self.stream = stream or sys.stdout
        self.live = enabled and (self.stream.isatty() if live is None else live)
        self.start_step = start_step
        self.t0 = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None
        if self.live:
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._bar = RichProgress(
                TextColumn("step {task.completed}/{task.total}"), BarColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=total_steps, completed=start_step, info="")

    def eta(self, step: int) -> float | None:
        done = step - self.start_step
        if not self.total or done <= 0:
            return None
        return (time.perf_counter() - self.t0) / done * (self.total - step)

    def update(self, step: int, metrics: dict[str, float]) -> None:
        """Called at logging intervals with host-side numbers."""
        if not self.enabled:
            return
        info = format_metrics(metrics)
        if self.live:
            self._bar.update(self._task, completed=step, info=info)
            return
        total = f"/{self.total}" if self.total else ""
        eta = self.eta(step)
        eta_text = f"  eta {_fmt_duration(eta)}" if eta is not None else ""
        print(f"step {step}{total}  {info}{eta_text}", file=self.stream, flush=True)

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
