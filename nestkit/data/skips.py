"""What a loader skipped, by reason, with paths: for the logs, the run summary and the errors.

Batches carry the items they dropped (``batch.skipped`` counts, ``batch.skipped_examples``
"reason: path" lines); :class:`SkipTally` adds them up in the main process and
:meth:`SkipTally.report` gives a :class:`SkipReport` the trainer can print or write out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nestkit.errors import DataError

log = logging.getLogger("nestkit.data")
MAX_LOGGED = 5  # skipped items logged one line each as they happen
FIRST_PER_REASON = 3  # example paths per reason in the report
MAX_LISTED = 100_000  # skipped items remembered for the full list


@dataclass(frozen=True)
class SkipReport:
    """Skipped items of one loader since it was built.

    ``counts`` maps a reason (``missing``, ``unreadable``, ``empty``, ``non_finite``,
    ``noise_*``, ``shard_*``) to how many items it dropped; ``first`` holds the first few paths of
    each reason; ``items`` the (reason, path) of every skipped item up to ``MAX_LISTED``
    (``truncated`` says when more were skipped); ``delivered`` counts the utterances that made it
    into batches; ``source`` names the data (manifest files).
    """

    source: str
    counts: dict[str, int]
    first: dict[str, list[str]]
    items: list[tuple[str, str]]
    delivered: int
    truncated: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def explain(self) -> str:
        """One line: why items were dropped (e.g. ``all 36 audio files of train.json are missing; first: ...``)."""
        if not self.counts:
            return f"nothing of {self.source} was skipped"
        if self.delivered == 0 and len(self.counts) == 1:
            (reason, n), = self.counts.items()
            what = "are missing" if reason == "missing" else f"were skipped as {reason.replace('_', ' ')}"
            first = f"; first: {', '.join(self.first[reason])}" if self.first.get(reason) else ""
            return f"all {n} audio files of {self.source} {what}{first}"
        reasons = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        head = f"no usable utterance in {self.source}" if self.delivered == 0 else (
            f"{self.total} of {self.total + self.delivered} items of {self.source} skipped")
        firsts = "; ".join(f"{r}: {', '.join(p)}" for r, p in self.first.items() if p)
        return f"{head}: {reasons}" + (f" (first: {firsts})" if firsts else "")

    def lines(self) -> list[str]:
        """The full list, one ``reason<TAB>path`` line per skipped item (for the experiment folder)."""
        out = [f"{reason}\t{path}" for reason, path in self.items]
        if self.truncated:
            out.append(f"... and {self.total - len(self.items)} more")
        return out


@dataclass
class SkipTally:
    """Running totals of the skips of one loader (main process)."""

    source: str
    max_skipped: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    items: list[tuple[str, str]] = field(default_factory=list)
    delivered: int = 0
    logged: int = 0

    def add(self, counts: dict[str, int], examples: list[str], delivered: int) -> None:
        """Count one batch's skips; log the first few; enforce ``max_skipped_items``."""
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.delivered += delivered
        for example in examples:
            reason, _, path = example.partition(": ")
            if len(self.items) < MAX_LISTED:
                self.items.append((reason, path))
            if self.logged < MAX_LOGGED:
                self.logged += 1
                log.warning("skipped unusable audio (%s)", example)
        if self.max_skipped is not None and sum(self.counts.values()) > self.max_skipped:
            raise DataError(f"more than max_skipped_items={self.max_skipped} unusable items: {self.report().explain()}")

    def report(self) -> SkipReport:
        first: dict[str, list[str]] = {}
        for reason, path in self.items:
            got = first.setdefault(reason, [])
            if len(got) < FIRST_PER_REASON:
                got.append(path)
        for reason in self.counts:  # reasons without a path (noise, shards)
            first.setdefault(reason, [])
        return SkipReport(self.source, dict(self.counts), first, list(self.items), self.delivered,
                          truncated=sum(self.counts.values()) > len(self.items) and len(self.items) >= MAX_LISTED)

    @property
    def examples(self) -> list[str]:
        return [f"{r}: {p}" for r, p in self.items[:MAX_LOGGED]]
