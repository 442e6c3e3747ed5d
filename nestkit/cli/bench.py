"""`nestkit bench`: time full training steps of a recipe's model on a synthetic batch; print JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def bench(
    recipe: Path = typer.Argument(..., help="Recipe YAML whose model and optimizer are benchmarked."),
    overrides: list[str] = typer.Argument(None, help="dotted.key=value overrides applied to the recipe."),
    batch: int = typer.Option(128, "--batch", min=1, help="Utterances per batch."),
    min_sec: float = typer.Option(8.0, "--min-sec", help="Shortest utterance, seconds (durations are uniform)."),
    max_sec: float = typer.Option(16.0, "--max-sec", help="Longest utterance, seconds."),
    steps: int = typer.Option(20, "--steps", min=1, help="Timed training steps."),
    warmup: int = typer.Option(5, "--warmup", min=0, help="Untimed steps first (include compilation)."),
    precision: str = typer.Option("bf16-mixed", "--precision", help="32, bf16-mixed or 16-mixed (autocast)."),
    compile: bool = typer.Option(
        None, "--compile/--no-compile", help="torch.compile the encoder blocks [default: on for CUDA, off for CPU]."
    ),
    activation_checkpointing: int = typer.Option(
        0, "--activation-checkpointing", min=-1, help="Encoder blocks that recompute activations in backward (-1: all)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    peak_tflops: float = typer.Option(
        None, "--peak-tflops", help="Peak TFLOP/s for MFU [default: from the GPU's name for 16-bit precisions; none on CPU]."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the model and the synthetic batch."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch's default)."),
    components: bool = typer.Option(True, "--components/--no-components", help="Also time each component's forward/backward."),
) -> None:
    """Median/min/max step time, audio-seconds per second, TFLOP/s and MFU, peak memory and
    per-component forward/backward times, as JSON on stdout.

    Each step is a full training step: forward with masking, loss, backward, optimizer step.

    Examples:

        nestkit bench recipes/nest_fast_conformer.yaml                    # GPU: batch 128 x 8-16 s, bf16, compiled
        nestkit bench recipes/nest_demo.yaml --device cpu --batch 8 --min-sec 2 --max-sec 4
        nestkit bench recipes/nest_fast_conformer.yaml --no-compile --precision 32 model.encoder.n_layers=4
    """
    import nestkit
    from nestkit.bench import BenchSettings, run_bench

    loaded = nestkit.load_recipe(recipe, list(overrides or []))
    settings = BenchSettings(
        batch=batch, min_sec=min_sec, max_sec=max_sec, steps=steps, warmup=warmup, precision=precision,
        compile=compile, activation_checkpointing=activation_checkpointing, device=device, peak_tflops=peak_tflops, seed=seed, threads=threads, components=components,
    )
    typer.echo(json.dumps(run_bench(loaded, settings), indent=2))
