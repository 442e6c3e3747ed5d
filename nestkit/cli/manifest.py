"""`nestkit manifest`: a NeMo manifest (and a validation split) from folders of audio."""

from __future__ import annotations

from pathlib import Path

import typer

MAX_LISTED = 10


def manifest(
    folders: list[Path] = typer.Argument(..., help="Folders to search for audio (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="The manifest to write (JSON lines)."),
    val_fraction: float = typer.Option(0.0, "--val-fraction", min=0.0, max=0.9,
                                       help="Share of recordings (or groups) for <out stem>_val.json; deterministic."),
    group_by_folder: int = typer.Option(None, "--group-by-folder", min=1,
                                        help="Split whole folders at this level below each DIR (1: its subfolders, e.g. speakers)."),
    label_from_folder: int = typer.Option(None, "--label-from-folder", min=1,
                                          help="Write the folder name at this level below DIR as a label (for nestkit probe)."),
    label_key: str = typer.Option("speaker", "--label-key", help="Key of that label."),
    min_duration: float = typer.Option(None, "--min-duration", min=0.0, help="Skip shorter files (seconds)."),
    max_duration: float = typer.Option(None, "--max-duration", min=0.0, help="Skip longer files (seconds)."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Processes reading headers (0: one per CPU)."),
) -> None:
    """Write a training manifest for every audio file soundfile reads below FOLDERS.

    Durations come from the headers (nothing is decoded); paths are relative to the manifest's
    folder when the audio is below it. Files that are not audio or cannot be read are skipped
    and listed.

    Example:

        nestkit manifest data/audio --out data/train.json --val-fraction 0.05 --group-by-folder 1 --label-from-folder 1

        nestkit train recipes/nest_fast_conformer.yaml model.train_ds.manifest_filepath=data/train.json model.validation_ds.manifest_filepath=data/train_val.json
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from nestkit.data import scan
    from nestkit.data.workers import usable_cpus
    from nestkit.errors import NestkitError

    if min_duration is not None and max_duration is not None and min_duration > max_duration:
        raise NestkitError(f"--min-duration {min_duration} exceeds --max-duration {max_duration}: nothing could pass")
    for folder in folders:
        if not folder.is_dir():
            raise NestkitError(f"{folder}: no such folder")
    scan.check_output(out)
    if val_fraction > 0:
        scan.check_output(scan.validation_path(out), split_of=out)
    candidates, not_audio = [], []
    for path, root, audio in scan.walk(folders):
        (candidates if audio else not_audio).append((path, root))
    columns = (TextColumn("reading headers"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("headers", total=len(candidates))
        found = scan.read_headers(candidates, jobs or usable_cpus(), lambda n: progress.advance(task, n))
    found += [scan.Found(p, r, None, "not_audio") for p, r in not_audio]
    result = scan.build_entries(
        found, out, min_duration=min_duration, max_duration=max_duration, val_fraction=val_fraction,
        group_level=group_by_folder, label_level=label_from_folder, label_key=label_key,
    )
    outputs = [(result.train, out)]
    text = f"wrote {len(result.train)} items to {out}"
    if val_fraction > 0:
        val = scan.validation_path(out)
        outputs.append((result.validation, val))
        text += f" and {len(result.validation)} to {val}"
    scan.write_manifests(outputs)
    typer.echo(f"{text} ({result.seconds / 3600:.2f} h)")
    note = result.split_note(val_fraction)
    if note:
        typer.echo(f"note: {note}")
    if result.skipped:
        counts: dict[str, int] = {}
        for reason, _ in result.skipped:
            counts[reason] = counts.get(reason, 0) + 1
        typer.echo(f"skipped {len(result.skipped)} files: " + ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(counts.items())))
        for reason, path in result.skipped[:MAX_LISTED]:
            typer.echo(f"  {reason}: {path}")
        if len(result.skipped) > MAX_LISTED:
            typer.echo(f"  ... and {len(result.skipped) - MAX_LISTED} more")
