"""What a loader skipped, by reason, with paths: for the logs, the run summary and the errors.

Batches carry the items they dropped (``batch.skipped`` counts, ``batch.skipped_examples``
"reason: path" lines). A bad file is read, and dropped, again every epoch, so :class:`SkipTally`
keeps each skipped item once (by its path, and offset for a segment) together with a mask of the
utterances delivered: the report says how many *distinct* items were unusable and how many were
used, which epochs cannot inflate. Reasons that are no utterance of the data (``noise_*``: noise
files; ``shard_*``: whole tar shards) are listed apart and never counted as items.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nestkit.errors import DataError

log = logging.getLogger("nestkit.data")
MAX_LOGGED = 5  # skipped items logged one line each as they are found
FIRST_PER_REASON = 3  # example paths per reason in the report
MAX_LISTED = 100_000  # skipped items remembered for the full list (and told apart)
NOT_ITEMS = ("noise_", "shard_")  # reasons that are no utterance of the data
HIGH_BITS = 32  # item indices split as (index >> 32, low bits): Lhotse Shar numbers its cuts (shard << 32) + line


def _words(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class SkipReport:
    """Skipped items of one loader (or of one split on every rank), each counted once.

    ``counts`` maps a reason (``missing``, ``unreadable``, ``empty``, ``non_finite``,
    ``noise_*``, ``shard_*``) to the distinct items (or shards) it dropped, and to the failed
    draws for ``noise_*`` (no path: ``events``); ``first`` holds the first few paths of each
    reason; ``items`` the (reason, path) of every skipped item up to ``MAX_LISTED``
    (``truncated`` says when more were skipped); ``delivered`` counts the distinct utterances
    used; ``size`` the items the data lists (None: unknown); ``source`` names the data.
    """

    source: str
    counts: dict[str, int]
    first: dict[str, list[str]]
    items: list[tuple[str, str]]
    delivered: int
    truncated: bool = False
    size: int | None = None
    events: dict[str, int] = field(default_factory=dict)
    used: dict[int, np.ndarray] | None = field(default=None, repr=False, compare=False)  # delivered masks, for merging ranks

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def skipped_items(self) -> int:
        """Distinct utterances of the data that could not be used."""
        return sum(n for r, n in self.counts.items() if not r.startswith(NOT_ITEMS))

    def explain(self) -> str:
        """One line: what was dropped (``3 of 35 items of train.json skipped (32 used): 2 missing, ...``)."""
        if not self.counts:
            return f"nothing of {self.source} was skipped"
        items = {r: n for r, n in self.counts.items() if not r.startswith(NOT_ITEMS)}
        other = {r: n for r, n in self.counts.items() if r.startswith(NOT_ITEMS)}
        if self.delivered == 0 and len(self.counts) == 1:
            (reason, n), = self.counts.items()
            what = "are missing" if reason == "missing" else f"were skipped as {reason.replace('_', ' ')}"
            first = f"; first: {', '.join(self.first[reason])}" if self.first.get(reason) else ""
            return f"all {n} {'shards' if reason.startswith('shard_') else 'audio files'} of {self.source} {what}{first}"
        read = self.skipped_items + self.delivered
        unread = f", {self.size - read} not read" if self.size is not None and self.size > read else ""
        if self.delivered == 0:
            head = f"no usable utterance in {self.source}"
        elif items:
            head = f"{self.skipped_items} of {read} items of {self.source} skipped ({self.delivered} used{unread})"
        else:
            head = f"no item of {self.source} skipped ({self.delivered} used{unread})"
        body = (f": {_words(items)}" if items else "") + (f"{'; also' if items else ':'} {_words(other)}" if other else "")
        firsts = "; ".join(f"{r}: {', '.join(p)}" for r, p in self.first.items() if p)
        return head + body + (f" (first: {firsts})" if firsts else "")

    def lines(self, mark: str = "") -> list[str]:
        """The full list, one ``reason<TAB>path`` line per skipped item (``mark`` before the reason)."""
        out = [f"{mark}{reason}\t{path}" for reason, path in self.items]
        if self.truncated:
            out.append(f"{mark}... and {self.total - sum(self.events.values()) - len(self.items)} more")
        return out


@dataclass
class SkipTally:
    """Running record of one loader's skips (main process): each skipped item once, plus which
    utterances were delivered (bool masks over the item indices, one per high part, grown on demand)."""

    source: str
    max_skipped: int | None = None
    size: int | None = None
    what: str = "audio"  # the log line's noun: "validation audio" for the validation loader
    found: dict[str, str] = field(default_factory=dict)  # path -> reason, in the order found
    extra: dict[str, int] = field(default_factory=dict)  # distinct items past MAX_LISTED, by reason
    events: dict[str, int] = field(default_factory=dict)  # skips without a path (noise draws)
    used: dict[int, np.ndarray] = field(default_factory=dict)
    delivered_unindexed: int = 0  # from merged reports without a mask
    logged: int = 0

    def add(self, counts: dict[str, int], examples: list[str], indices: Any) -> None:
        """Count one batch (its skips and its delivered ``indices``); log the first few new
        items; enforce ``max_skipped_items`` (on distinct items)."""
        listed: dict[str, int] = {}
        for example in examples:
            reason, _, path = example.partition(": ")
            listed[reason] = listed.get(reason, 0) + 1
            if self._note(reason, path) and self.logged < MAX_LOGGED:
                self.logged += 1
                log.warning("skipped unusable %s (%s)", self.what, example)
        for reason, n in counts.items():  # what came without a path
            if n > listed.get(reason, 0):
                self.events[reason] = self.events.get(reason, 0) + n - listed.get(reason, 0)
        self._mark(np.asarray(indices, dtype=np.int64))
        total = len(self.found) + sum(self.extra.values()) + sum(self.events.values())
        if self.max_skipped is not None and total > self.max_skipped:
            raise DataError(f"more than max_skipped_items={self.max_skipped} unusable items: {self.report().explain()}")

    def _note(self, reason: str, path: str) -> bool:
        """Record one skipped item; False when it is already known."""
        if path in self.found:
            return False
        if len(self.found) >= MAX_LISTED:
            self.extra[reason] = self.extra.get(reason, 0) + 1  # cannot tell repeats apart any more
        else:
            self.found[path] = reason
        return True

    def _mark(self, idx: np.ndarray) -> None:
        if idx.size == 0:
            return
        high, low = idx >> HIGH_BITS, idx & ((1 << HIGH_BITS) - 1)
        for h in np.unique(high).tolist():  # one part for a manifest; the batch's shards for Shar
            part = low if h == 0 and not high.any() else low[high == h]
            mask = self.used.get(h, np.zeros(0, dtype=bool))
            top = int(part.max()) + 1
            if top > mask.size:
                grown = np.zeros(max(top, 2 * mask.size, (self.size or 0) if h == 0 else 0), dtype=bool)
                grown[: mask.size] = mask
                mask = self.used[h] = grown
            mask[part] = True

    def _delivered(self) -> int:
        return sum(int(m.sum()) for m in self.used.values()) + self.delivered_unindexed

    def report(self) -> SkipReport:
        counts: dict[str, int] = {}
        first: dict[str, list[str]] = {}
        for path, reason in self.found.items():
            counts[reason] = counts.get(reason, 0) + 1
            got = first.setdefault(reason, [])
            if len(got) < FIRST_PER_REASON:
                got.append(path)
        for extra in (self.extra, self.events):
            for reason, n in extra.items():
                counts[reason] = counts.get(reason, 0) + n
                first.setdefault(reason, [])
        return SkipReport(self.source, counts, first, [(r, p) for p, r in self.found.items()],
                          self._delivered(), truncated=bool(self.extra), size=self.size, events=dict(self.events),
                          used={h: m.copy() for h, m in self.used.items()})

    @property
    def examples(self) -> list[str]:
        return [f"{r}: {p}" for p, r in list(self.found.items())[:MAX_LOGGED]]

    # ------------------------------------------------------------------ resume and ranks

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (plain values and one uint8 tensor: ``weights_only`` loads it)."""
        import torch

        return {"items": [[r, p] for p, r in self.found.items()], "extra": dict(self.extra), "events": dict(self.events),
                "used": [[h, int(m.size), torch.from_numpy(np.packbits(m))] for h, m in self.used.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.found = {str(p): str(r) for r, p in state.get("items", [])}
        self.extra, self.events = dict(state.get("extra", {})), dict(state.get("events", {}))
        self.used = {int(h): np.unpackbits(packed.numpy())[:n].astype(bool) for h, n, packed in state.get("used", [])}


def merge_reports(reports: Iterable[SkipReport]) -> SkipReport:
    """One report of several ranks' reports of the same data (an item skipped on two ranks once)."""
    reports = list(reports)
    if len(reports) == 1:
        return reports[0]
    tally = SkipTally(reports[0].source, size=reports[0].size)
    for r in reports:
        listed: dict[str, int] = {}
        for reason, path in r.items:
            tally._note(reason, path)
            listed[reason] = listed.get(reason, 0) + 1
        for reason, n in r.counts.items():
            unlisted = n - r.events.get(reason, 0) - listed.get(reason, 0)
            if unlisted > 0:
                tally.extra[reason] = tally.extra.get(reason, 0) + unlisted
        for reason, n in r.events.items():
            tally.events[reason] = tally.events.get(reason, 0) + n
        if r.used is not None:
            for h, mask in r.used.items():
                tally._mark(np.flatnonzero(mask) + (h << HIGH_BITS))
        else:
            tally.delivered_unindexed += r.delivered
    return tally.report()
