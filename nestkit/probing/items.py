"""The items a probe scores: manifest lines with the label, in stratified folds or a given split.

Lines without the label are skipped and counted; a ``split`` key (``train`` / ``test``) on the
labelled lines replaces cross-validation. Too few classes, or too few items per class for the
folds, is a one-line :class:`DataError` raised before any model is loaded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from nestkit.data.manifest import ALL_KEYS, read_manifest
from nestkit.errors import DataError, NestkitError, did_you_mean

SPLIT_KEY = "split"


@dataclass
class ProbeItems:
    """Labelled utterances as columns; ``is_test`` is None when the probe cross-validates."""

    where: str  # the manifest(s), for error messages
    label: str
    paths: list[str]
    durations: np.ndarray
    offsets: np.ndarray
    names: list[str]  # each item's label value
    is_test: np.ndarray | None
    skipped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.names))

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 class index into :attr:`classes`."""
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[name] for name in self.names], dtype=np.int64)

    def subset(self, keep: list[int]) -> ProbeItems:
        """The items at ``keep`` (e.g. those whose audio could be read)."""
        return ProbeItems(
            self.where, self.label, [self.paths[i] for i in keep], self.durations[keep], self.offsets[keep],
            [self.names[i] for i in keep], None if self.is_test is None else self.is_test[keep], Counter(self.skipped),
        )

    def check(self, folds: int) -> None:
        """A :class:`DataError` unless there are 2+ classes and enough items to score them."""
        counts = Counter(self.names)
        if len(counts) < 2:
            only = f" ('{next(iter(counts))}')" if counts else ""
            raise DataError(
                f"{self.where}: label '{self.label}' has {len(counts)} class{only} among {len(self)} usable items; "
                "a probe needs at least 2 (choose another --label)"
            )
        if self.is_test is not None:
            for side, present in (("test", self.is_test), ("train", ~self.is_test)):
                if not present.any():
                    raise DataError(
                        f"{self.where}: no usable item has {SPLIT_KEY}: {side} "
                        f"(mark some items {SPLIT_KEY}: {side}, or drop the {SPLIT_KEY} key to cross-validate)"
                    )
            return
        if folds < 2:
            raise NestkitError(f"--folds: need at least 2 folds (got {folds})")
        name, fewest = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
        if fewest < folds:
            fix = f"use --folds {fewest}" if fewest >= 2 else f"add items of class '{name}' or drop them"
            raise DataError(
                f"{self.where}: class '{name}' of label '{self.label}' has {fewest} usable item(s), "
                f"fewer than --folds {folds} ({fix})"
            )


def read_items(manifest: str | list[str], label: str) -> ProbeItems:
    """Labelled items of ``manifest``; lines without ``label`` (or with a bad split) are counted."""
    data = read_manifest(manifest, keep=(label, SPLIT_KEY))
    where = manifest if isinstance(manifest, str) else ",".join(manifest)
    skipped: Counter[str] = Counter({f"malformed line ({reason.replace('_', ' ')})": n
                                     for reason, n in data.report.malformed.items()})
    values = data.column(label)
    has_label = [value is not None and value != "" for value in values]
    if not any(has_label):
        keys = sorted({key for extra in read_manifest(manifest, keep=ALL_KEYS).extras for key in extra})
        listed = f" (keys found: {', '.join(keys)})" if keys else " (its lines have no keys besides the audio)"
        raise DataError(f"{where}: no line has the label key '{label}'{did_you_mean(label, keys) or listed}")
    splits = data.column(SPLIT_KEY)
    use_split = any(s is not None for s, labelled in zip(splits, has_label) if labelled)
    keep: list[int] = []
    for i, labelled in enumerate(has_label):
        if not labelled:
            skipped[f"no '{label}'"] += 1
        elif use_split and splits[i] not in ("train", "test"):
            skipped[f"{SPLIT_KEY} not train/test"] += 1
        else:
            keep.append(i)
    return ProbeItems(
        where, label, [data.paths[i] for i in keep], data.durations[keep], data.offsets[keep],
        [str(values[i]) for i in keep],
        np.array([splits[i] == "test" for i in keep], dtype=bool) if use_split else None,
        skipped,
    )


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N,) fold of each item: every class spread evenly over the folds, shuffled by ``seed``."""
    order = np.lexsort((np.random.default_rng(seed).random(len(labels)), labels))
    fold = np.empty(len(labels), dtype=np.int64)
    fold[order] = np.arange(len(labels)) % folds
    return fold
