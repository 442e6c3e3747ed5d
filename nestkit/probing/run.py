"""``nestkit probe``: how well a frozen encoder's layers classify an utterance label.

SUPERB-style, utterance level: features pooled per utterance (mean and std over valid frames) of
each chosen encoder block, a linear classifier scored by stratified k-fold cross-validation (or a
``split: train|test`` key), and two baselines by the same procedure: log-mel features of the
model's own preprocessor and the same architecture randomly initialised with a fixed seed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nestkit.contracts import encoder_depth
from nestkit.devices import resolve_device
from nestkit.errors import DataError, NestkitError
from nestkit.pretrained import load_model
from nestkit.recipe import Recipe
from nestkit.probing.classifier import fold_accuracies
from nestkit.probing.features import pooled_features, tracked
from nestkit.probing.items import read_items, stratified_folds
from nestkit.probing.report import write_json, write_plot


@dataclass
class ProbeReport:
    result: dict[str, Any]  # exactly probe.json
    skipped: Counter[str]  # reason -> items left out
    out_dir: Path | None
    plot_note: str | None  # why probe.png was not written (None: written, or no out_dir)


def parse_layers(spec: str | Sequence[int], n_layers: int) -> list[int]:
    """``all``, ``-1`` or ``0,3,...`` (negatives from the end) -> sorted 0-based block indices."""
    if isinstance(spec, str) and spec.strip() == "all":
        return list(range(n_layers))
    try:
        wanted = [int(p) for p in spec.split(",") if p.strip()] if isinstance(spec, str) else [int(p) for p in spec]
    except ValueError:
        raise NestkitError(f"--layers: '{spec}' is not 'all' or comma-separated integers (e.g. -1 or 0,3)") from None
    bad = [i for i in wanted if not -n_layers <= i < n_layers]
    if bad or not wanted:
        raise NestkitError(f"--layers: {bad[0] if bad else spec!r} is out of range: the encoder has {n_layers} "
                           f"blocks (0..{n_layers - 1}, or -{n_layers}..-1)")
    return sorted({i % n_layers for i in wanted})


def _random_init(recipe: Recipe, seed: int, device: torch.device) -> torch.nn.Module:
    """The checkpoint's architecture with fresh weights drawn under ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return recipe.build_model().to(device).eval()


def run_probe(
    checkpoint: str | Path,
    manifest: str | list[str],
    label: str,
    *,
    folds: int = 5,
    layers: str | Sequence[int] = "all",
    out: str | Path | None = None,
    seed: int = 0,
    l2: float = 1e-3,
    device: str = "auto",
    batch_seconds: float = 120.0,
    progress: bool = True,
) -> ProbeReport:
    """Probe ``label`` of ``manifest`` on the checkpoint's encoder layers; write DIR/probe.json
    and DIR/probe.png when ``out`` is given."""
    items = read_items(manifest, label)
    items.check(folds)
    dev = resolve_device(device)
    model, recipe = load_model(checkpoint, dev)
    chosen = parse_layers(layers, encoder_depth(model, encoder_name=recipe.data["model"]["encoder"]["name"], needed_by="nestkit probe",
                                                  fix="it probes each block's output"))
    sample_rate = int(recipe.data["model"].get("sample_rate", 16000))
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NestkitError(f"{out_dir}: cannot create output folder ({exc.strerror})") from None
    pooled = pooled_features(items, model, _random_init(recipe, seed, dev), chosen, sample_rate=sample_rate,
                             device=dev, batch_seconds=batch_seconds, progress=progress)
    skipped = items.skipped + pooled.unreadable
    if not pooled.kept:
        raise DataError(f"{items.where}: none of the {len(items)} labelled items has readable audio")
    items = items.subset(pooled.kept)
    items.check(folds)
    labels = torch.from_numpy(items.labels).to(dev)
    if items.is_test is not None:
        is_test = torch.from_numpy(items.is_test)[None, :]
    else:
        fold = torch.from_numpy(stratified_folds(items.labels, folds, seed))
        is_test = fold[None, :] == torch.arange(folds)[:, None]
    is_test = is_test.to(dev)

    def scored(features: str, layer: int | None, x: torch.Tensor) -> dict[str, Any]:
        acc = fold_accuracies(x.to(dev), labels, is_test, len(items.classes), l2=l2).cpu().numpy()
        return {"features": features, "layer": layer, "accuracy": float(acc.mean()), "accuracy_std": float(np.std(acc))}

    jobs = [(name, layer, feats[k]) for name, feats in (("pretrained", pooled.pretrained), ("random_init", pooled.random_init))
            for k, layer in enumerate(chosen)]
    jobs.append(("log_mel", None, pooled.log_mel))
    results = [scored(*job) for job in tracked(jobs, f"fitting {len(jobs)} probes", progress)]
    result = {"label": label, "classes": len(items.classes), "items": len(items),
              "folds": 1 if items.is_test is not None else folds, "results": results}
    note = None
    if out_dir is not None:
        write_json(result, out_dir / "probe.json")
        note = write_plot(result, out_dir / "probe.png")
    return ProbeReport(result, skipped, out_dir, note)
