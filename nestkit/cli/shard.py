"""`nestkit shard`: pack a manifest's audio into NeMo-style tar shards for streaming at scale."""

from __future__ import annotations

from pathlib import Path

import typer


def shard(
    manifest: list[Path] = typer.Argument(..., help="NeMo manifest(s) to pack."),
    out_dir: Path = typer.Option(..., "--out-dir", "-o", help="Folder for audio_<k>.tar and tarred_audio_manifest.json."),
    num_shards: int = typer.Option(8, "--num-shards", "-n", min=1, help="Number of tar files."),
) -> None:
    """Write tar shards + their manifest; use them with `is_tarred: true`.

    Example:

        nestkit shard data/train.json -o data/shards -n 64

        # recipe: model.train_ds.is_tarred=true
        #         model.train_ds.tarred_audio_filepaths=data/shards/audio_{0..63}.tar
        #         model.train_ds.manifest_filepath=data/shards/tarred_audio_manifest.json
    """
    from nestkit.data import write_shards

    shards = write_shards([str(m) for m in manifest], out_dir, num_shards, progress=True)
    last = len(shards) - 1
    typer.echo(f"wrote {len(shards)} shards to {out_dir} (tarred_audio_filepaths: {out_dir}/audio_{{0..{last}}}.tar)")
