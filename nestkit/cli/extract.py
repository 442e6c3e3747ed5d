"""`nestkit extract`: per-utterance encoder features from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer


def extract(
    checkpoint: Path = typer.Argument(..., help="nestkit checkpoint (training or import-nemo output)."),
    manifest: str = typer.Argument(..., help="NeMo manifest(s), comma-separated."),
    out_dir: Path = typer.Argument(..., help="Folder for one feature file per utterance."),
    layer: list[int] | None = typer.Option(None, "--layer", "-l", help="Encoder block(s) to write (0-based; -1 = last). Default: final output."),
    fmt: str = typer.Option("npy", "--format", "-f", help="npy or pt."),
    batch_seconds: float = typer.Option(120.0, "--batch-seconds", help="Padded audio seconds per batch."),
    device: str = typer.Option("auto", "--device", help="auto (GPU if present), cpu or cuda."),
) -> None:
    """Encode a manifest's audio and write each utterance's features: a (d_model, frames) array,
    or (layers, d_model, frames) with --layer, the layout of model.extract in Python (NeMo's,
    channels first); features_manifest.json maps each audio file to its feature file.

    Examples:

        nestkit extract nest_experiments/NEST-demo/checkpoints/last.ckpt data/dev.json feats/

        nestkit extract model.ckpt data/dev.json feats/ --layer 6 --layer -1 --format pt
    """
    from nestkit.extract import extract_features

    report = extract_features(checkpoint, manifest, out_dir, layers=layer or None, fmt=fmt,
                              batch_seconds=batch_seconds, device=device)
    written = f"wrote {report.written} feature files ({report.frames} frames) to {out_dir}"
    typer.echo(f"{written}; skipped: {report.skipped_text()}")
    for line in report.named:
        typer.echo(f"  {line}")
    more = sum(report.skipped.values()) - len(report.named)
    if report.named and more > 0:
        typer.echo(f"  ... and {more} more")
