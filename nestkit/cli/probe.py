"""`nestkit probe`: linear probes of a checkpoint's encoder layers on a manifest label."""

from __future__ import annotations

from pathlib import Path

import typer


def probe(
    checkpoint: Path = typer.Argument(..., help="nestkit checkpoint (training or import-nemo output)."),
    manifest: str = typer.Argument(..., help="NeMo manifest(s) whose lines carry the label key, comma-separated."),
    label: str = typer.Option(..., "--label", help="Manifest key to classify, e.g. speaker."),
    folds: int = typer.Option(5, "--folds", help="Stratified cross-validation folds (ignored with a split: train|test key)."),
    layers: str = typer.Option("all", "--layers", help="Encoder blocks: all, -1, or 0,3,... (0-based; negatives from the end)."),
    out: Path = typer.Option(Path("probe"), "--out", help="Folder for probe.json and probe.png."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds and of the random-init baseline."),
    l2: float = typer.Option(1e-3, "--l2", help="L2 weight of the logistic regression."),
    device: str = typer.Option("auto", "--device", help="auto (GPU if present), cpu or cuda."),
    batch_seconds: float = typer.Option(120.0, "--batch-seconds", help="Padded audio seconds per batch."),
) -> None:
    """Classify a manifest label from each encoder layer's pooled features (mean and std over
    frames) with a linear classifier, beside log-mel and random-init baselines.

    Examples:

        nestkit probe nest_experiments/NEST-demo/checkpoints/last.ckpt data/dev.json --label speaker

        nestkit probe model.ckpt data/speakers.json --label speaker --layers 0,6,-1 --folds 10 --out probe_spk
    """
    from rich.console import Console

    from nestkit.probing.items import read_items

    read_items(manifest, label).check(folds)  # bad input fails here, before torch loads
    from nestkit.probing.report import results_table
    from nestkit.probing.run import run_probe

    report = run_probe(checkpoint, manifest, label, folds=folds, layers=layers, out=out, seed=seed, l2=l2,
                       device=device, batch_seconds=batch_seconds)
    console = Console()
    console.print(results_table(report.result))
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(report.skipped.items())) or "none"
    console.print(f"skipped: {skipped}")
    written = "probe.json" if report.plot_note else "probe.json and probe.png"
    console.print(f"wrote {written} to {out}")
    if report.plot_note:
        console.print(report.plot_note)
