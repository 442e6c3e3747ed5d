"""NeMo interop verbs: `import-nemo`, `export-nemo`, `convert-nemo-config`."""

from __future__ import annotations

from pathlib import Path

import typer


def import_nemo(
    archive: Path = typer.Argument(..., help="A NeMo .nemo file: a NEST model, or with --encoder-only any FastConformer ASR model."),
    out: Path = typer.Argument(..., help="nestkit checkpoint to write (its recipe goes next to it as .yaml)."),
    encoder_only: bool = typer.Option(
        False, "--encoder-only", help="Take only the encoder and its preprocessor (e.g. of a CTC model) into a NEST recipe: continued pretraining."
    ),
    recipe: Path | None = typer.Option(None, "--recipe", help="With --encoder-only: the NEST recipe for every other part (default: recipes/nest_fast_conformer.yaml)."),
) -> None:
    """Convert a .nemo archive into a nestkit checkpoint and recipe; every key dropped or changed
    on the way is listed as a note.

    Examples:

        nestkit import-nemo ssl_en_nest_large.nemo nest_large.ckpt
        nestkit extract nest_large.ckpt data/dev.json feats/

        nestkit import-nemo stt_en_fastconformer_ctc_large.nemo fc_ctc.ckpt --encoder-only
        nestkit train fc_ctc.yaml exp_manager.resume_from_checkpoint=fc_ctc.ckpt model.train_ds.manifest_filepath=data/train.json
    """
    from nestkit.errors import NestkitError
    from nestkit.outputs import check_outputs

    if recipe is not None and not encoder_only:
        raise NestkitError(f"--recipe {recipe}: only used with --encoder-only (add it, or drop --recipe)")
    check_outputs([out, out.with_suffix(".yaml")], [archive, *([recipe] if recipe else [])])
    if encoder_only:
        from nestkit.interop.nemo_encoder import import_nemo_encoder

        imported = import_nemo_encoder(archive, out, base_recipe=recipe)
    else:
        from nestkit.interop.nemo_archive import import_nemo

        imported = import_nemo(archive, out)
    for line in imported.notes:
        typer.echo(f"note: {line}")
    typer.echo(f"wrote {imported.checkpoint} and {imported.recipe}")


def export_nemo(
    checkpoint: Path = typer.Argument(..., help="nestkit checkpoint."),
    out: Path = typer.Argument(..., help=".nemo archive to write."),
) -> None:
    """Write a checkpoint as a .nemo archive for NeMo (EncDecDenoiseMaskedTokenPredModel, init_from_nemo_model).

    Example:

        nestkit export-nemo nest_experiments/NEST-demo/checkpoints/last.ckpt demo.nemo
    """
    from nestkit.interop.nemo_archive import export_nemo as run
    from nestkit.outputs import check_outputs

    check_outputs([out], [checkpoint])
    path, notes = run(checkpoint, out)
    for line in notes:
        typer.echo(f"note: {line}")
    typer.echo(f"wrote {path}")


def convert_nemo_config(
    nemo_yaml: Path = typer.Argument(..., help="NeMo training config (e.g. nest_fast-conformer.yaml)."),
    out: Path = typer.Argument(..., help="nestkit recipe to write."),
) -> None:
    """Translate a NeMo training config into a nestkit recipe and report what has no equivalent
    (missing folders of OUT are created).

    Example:

        nestkit convert-nemo-config nest_fast-conformer.yaml recipes/my_nest.yaml
    """
    from nestkit.interop.nemo_config import convert_training_config, write_recipe

    recipe_text, report = convert_training_config(nemo_yaml)
    write_recipe(out, recipe_text, source=nemo_yaml)
    for line in report:
        typer.echo(f"note: {line}")
    typer.echo(f"wrote {out}")
