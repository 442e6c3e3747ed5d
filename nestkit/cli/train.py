"""`nestkit train RECIPE [OVERRIDES...]` and `nestkit export-encoder CKPT OUT`.

torch is imported inside the commands so ``nestkit --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer


def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    overrides: list[str] | None = typer.Argument(None, help="dotted.key=value overrides, e.g. trainer.max_steps=100."),
    devices: str | None = typer.Option(
        None, "--devices", help="'auto' (every GPU, else the CPU), 'cpu', or N processes on this machine (overrides trainer.devices)."
    ),
    # Annotated, so a call from Python without it reads False (a typer.Option default is truthy)
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    """Pretrain a model from a recipe: checkpoints, TensorBoard logs and the resolved recipe go to
    exp_manager.exp_dir/name (default ./nest_experiments/<recipe name>). A rerun continues from
    the last checkpoint (exp_manager.resume_if_exists). Ctrl-C saves a checkpoint and stops.

    Examples:

        nestkit train recipes/nest_demo.yaml

        nestkit train recipes/nest_demo.yaml trainer.max_steps=200 trainer.log_every_n_steps=20

        nestkit train recipes/nest_fast_conformer.yaml --devices 8 model.train_ds.manifest_filepath=train.json

        torchrun --nnodes 2 --nproc-per-node 8 -m nestkit.cli.main train recipes/nest_fast_conformer.yaml

        tensorboard --logdir nest_experiments
    """
    if debug:
        os.environ["NESTKIT_DEBUG"] = "1"
    from nestkit.cli.common import load_cli_recipe
    from nestkit.train import distributed

    # a worker of `--devices N` (or a rank > 0 of torchrun) says nothing its launcher (rank 0) said
    worker = bool(os.environ.get(distributed.LAUNCHED_ENV)) or os.environ.get("RANK", "0") != "0"
    if os.environ.get(distributed.LAUNCHED_ENV):
        distributed.stop_with_launcher()
    resolved = load_cli_recipe(recipe, overrides or (), quiet=worker)
    wanted = distributed.parse_devices(devices) if devices is not None else resolved.trainer.devices
    distributed.check_nodes(resolved.trainer.num_nodes, resolved.source)
    if not distributed.launched_by_torchrun():
        nproc = distributed.wanted_processes(wanted, resolved.trainer.accelerator)
        if nproc > 1:
            argv = ["train", str(recipe), *(overrides or [])]
            code = distributed.relaunch(nproc, argv)
            if code:
                raise typer.Exit(code)
            return
    from nestkit.train.loop import train as run

    result = run(resolved, devices=wanted)
    if result.stopped_by:
        from nestkit.train.stopping import exit_code

        raise typer.Exit(exit_code(result.stopped_by))


def export_encoder(
    ckpt: Path = typer.Argument(..., help="A nestkit training checkpoint (e.g. .../checkpoints/last.ckpt)."),
    out: Path = typer.Argument(..., help="Where to write the encoder (a .pt file)."),
) -> None:
    """Write the encoder and the preprocessor that computes its input features (configs and
    tensors) from a checkpoint, for fine-tuning or feature extraction elsewhere.

    Load it in Python with one call:  encoder, preprocessor = nestkit.load_encoder("encoder.pt")
    preprocessor(audio, audio_len) gives (B, D, T) features, encoder(feats, feats_len) gives
    (B, d_model, T'). The file is also plain torch.load(path, weights_only=True):
    {"format", "encoder_config", "encoder_state_dict", "preprocessor_config", "preprocessor_state_dict", "recipe", "step"}.

    Examples:

        nestkit export-encoder nest_experiments/NEST-demo/checkpoints/last.ckpt encoder.pt
    """
    from nestkit.outputs import check_outputs
    from nestkit.train.export import export_encoder as write

    check_outputs([out], [ckpt])

    path, n = write(ckpt, out)
    print(f"wrote {path}: {n} encoder tensors", file=sys.stdout)
