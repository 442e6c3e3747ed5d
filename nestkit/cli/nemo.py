"""NeMo interop verbs: `import-nemo`, `export-nemo`, `convert-nemo-config`."""

from __future__ import annotations

from pathlib import Path

import typer


def import_nemo(
    archive: Path = typer.Argument(..., help="A NeMo NEST / masked-token-prediction .nemo file."),
    out: Path = typer.Argument(..., help="nestkit checkpoint to write (its recipe goes next to it as .yaml)."),
) -> None:
    """Convert a .nemo archive into a nestkit checkpoint and recipe.

    Example:

        nestkit import-nemo ssl_en_nest_large.nemo nest_large.ckpt
        nestkit extract nest_large.ckpt data/dev.json feats/
    """
    from nestkit.interop.nemo_archive import import_nemo as run

    ckpt, recipe = run(archive, out)
    typer.echo(f"wrote {ckpt} and {recipe}")


def export_nemo(
    checkpoint: Path = typer.Argument(..., help="nestkit checkpoint."),
    out: Path = typer.Argument(..., help=".nemo archive to write."),
) -> None:
    """Write a checkpoint as a .nemo archive for NeMo (EncDecDenoiseMaskedTokenPredModel, init_from_nemo_model).

    Example:

        nestkit export-nemo nest_experiments/demo/checkpoints/last.ckpt demo.nemo
    """
    from nestkit.interop.nemo_archive import export_nemo as run

    typer.echo(f"wrote {run(checkpoint, out)}")


def convert_nemo_config(
    nemo_yaml: Path = typer.Argument(..., help="NeMo training config (e.g. nest_fast-conformer.yaml)."),
    out: Path = typer.Argument(..., help="nestkit recipe to write."),
) -> None:
    """Translate a NeMo training config into a nestkit recipe and report what has no equivalent.

    Example:

        nestkit convert-nemo-config nest_fast-conformer.yaml recipes/my_nest.yaml
    """
    from nestkit.interop.nemo_config import convert_training_config

    recipe_text, report = convert_training_config(nemo_yaml)
    out.write_text(recipe_text)
    for line in report:
        typer.echo(f"note: {line}")
    typer.echo(f"wrote {out}")
