"""The ``nestkit`` command: a thin Typer app; each verb lives in its own module.

User mistakes (``NestkitError``) are printed as one line on stderr with exit code 2; ``--debug``
shows the traceback instead. Nothing here imports torch, so ``nestkit --help`` stays fast.
"""

from __future__ import annotations

import os
import sys

import typer

from nestkit.cli import describe, list_components, schema, validate

app = typer.Typer(
    name="nestkit",
    help="Self-supervised speech pretraining (NEST / BEST-RQ) from typed YAML recipes.\n\n"
    "Start with:  nestkit train recipes/nest_demo.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    if debug:
        os.environ["NESTKIT_DEBUG"] = "1"


app.command("list-components")(list_components.list_components)
app.command("describe")(describe.describe)
app.command("validate")(validate.validate)
app.command("schema")(schema.schema)

for _module, _verbs in (
    ("nestkit.cli.train", (("train", "train"), ("export-encoder", "export_encoder"))),
    ("nestkit.cli.shard", (("shard", "shard"),)),
    ("nestkit.cli.bench", (("bench", "bench"),)),
    ("nestkit.cli.extract", (("extract", "extract"),)),
    ("nestkit.cli.nemo", (("import-nemo", "import_nemo"), ("export-nemo", "export_nemo"), ("convert-nemo-config", "convert_nemo_config"))),
):
    try:
        _mod = __import__(_module, fromlist=["_"])
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise
        continue
    for _verb, _fn in _verbs:
        app.command(_verb)(getattr(_mod, _fn))


def main() -> None:
    """Console-script entry point."""
    from nestkit.errors import NestkitError

    try:
        app()
    except NestkitError as err:
        if os.environ.get("NESTKIT_DEBUG") or "--debug" in sys.argv:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
