"""Feature extraction with a pretrained encoder: what downstream users do with an SSL model.

Utterances are read from a NeMo manifest, grouped by duration into batches of bounded padded
length (little padding, bounded memory), encoded without masking, and written one file per
utterance with only its valid frames, plus ``features_manifest.json`` mapping audio to features.
Files keep the layout of ``model.extract`` (NeMo's, channels first): (d_model, frames), or
(layers, d_model, frames) when layers are chosen.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nestkit.contracts import encoder_depth
from nestkit.data.audio import AudioReadError, read_audio
from nestkit.data.manifest import read_manifest
from nestkit.devices import resolve_device
from nestkit.errors import NestkitError
from nestkit.pretrained import load_model


MAX_NAMED = 5  # skipped lines and files named in the summary


@dataclass
class ExtractReport:
    """What was written and what was skipped: ``skipped`` counts by reason (malformed manifest
    lines as ``malformed line (why)``, like ``nestkit probe``); ``named`` lists the first few of them,
    ``FILE line N: why`` or ``reason: audio path``, so the user can find and fix them."""

    written: int = 0
    frames: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    out_dir: Path = Path()
    named: list[str] = field(default_factory=list)

    def skipped_text(self) -> str:
        """``1 malformed line (not json), 2 missing``, or ``none``."""
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"


def duration_batches(durations: np.ndarray, batch_seconds: float) -> list[list[int]]:
    """Indices sorted by duration, cut so that (longest x count) stays within ``batch_seconds``."""
    batches: list[list[int]] = []
    current: list[int] = []
    for index in np.argsort(durations, kind="stable").tolist():
        longest = float(durations[index])  # ascending order: the newest is the longest
        if current and longest * (len(current) + 1) > batch_seconds:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def check_layers(layers: list[int], depth: int) -> None:
    """Refuse a block index the encoder does not have (``i % depth`` would silently pick another)."""
    for layer in layers:
        if not -depth <= layer < depth:
            raise NestkitError(f"--layer {layer}: the encoder has {depth} blocks (use 0..{depth - 1}, or -{depth}..-1 from the end)")


def _unique_names(paths: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    names = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] += 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem] - 1}")
    return names


def extract_features(
    checkpoint: str | Path,
    manifest: str | list[str],
    out_dir: str | Path,
    *,
    layers: list[int] | None = None,
    fmt: str = "npy",
    batch_seconds: float = 120.0,
    device: str = "auto",
    progress: bool = True,
) -> ExtractReport:
    """Write encoder features for every readable utterance of ``manifest``.

    Each file holds float32 (d_model, frames) for the final output, or (len(layers), d_model,
    frames) when ``layers`` are chosen (0-based blocks; negatives count from the end).
    """
    if fmt not in ("npy", "pt"):
        raise NestkitError(f"unknown format '{fmt}' (use npy or pt)")
    device = str(resolve_device(device))
    model, recipe = load_model(checkpoint, device)
    if layers:
        check_layers(layers, encoder_depth(model, encoder_name=recipe.data["model"]["encoder"]["name"], needed_by="--layer",
                                           fix="leave out --layer for the final output"))
    sample_rate = int(recipe.data["model"].get("sample_rate", 16000))
    data = read_manifest(manifest)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NestkitError(f"{out}: cannot create output folder ({exc.strerror})") from None
    names = _unique_names(data.paths)
    report = ExtractReport(out_dir=out)
    for reason, n in data.report.malformed.items():
        report.skipped[f"malformed line ({reason.replace('_', ' ')})"] += n
    report.named.extend(data.report.malformed_lines[:MAX_NAMED])
    index_lines: list[str] = []
    batches = duration_batches(data.durations, batch_seconds)
    steps = batches
    if progress:
        from rich.progress import track

        steps = track(batches, description=f"extracting {len(data)} utterances")  # type: ignore[assignment]
    for batch in steps:
        audios, kept = [], []
        for i in batch:
            try:
                audios.append(read_audio(data.paths[i], sample_rate=sample_rate, offset=float(data.offsets[i]),
                                         duration=float(data.durations[i]) or None))
                kept.append(i)
            except AudioReadError as err:
                report.skipped[err.reason] += 1
                if len(report.named) < MAX_NAMED:
                    report.named.append(f"{err.reason}: {data.paths[i]}")
        if not kept:
            continue
        lengths = torch.tensor([a.shape[0] for a in audios])
        padded = torch.nn.utils.rnn.pad_sequence(audios, batch_first=True)
        with torch.inference_mode():
            outputs, out_len = model.extract(padded.to(device), lengths.to(device), layers=layers)
        stacked = torch.stack(outputs, dim=0).float().cpu()  # (L, B, d_model, T')
        for row, i in enumerate(kept):
            frames = int(out_len[row])
            feats = stacked[:, row, :, :frames]
            feats = feats[0] if layers is None else feats
            target = out / f"{names[i]}.{fmt}"
            if fmt == "npy":
                np.save(target, np.ascontiguousarray(feats.numpy()))
            else:
                torch.save(feats.clone(), target)
            index_lines.append(json.dumps({"audio_filepath": data.paths[i], "feature_filepath": target.name,
                                           "frames": frames, "duration": float(data.durations[i])}))
            report.written += 1
            report.frames += frames
    (out / "features_manifest.json").write_text("\n".join(index_lines) + ("\n" if index_lines else ""))
    return report
