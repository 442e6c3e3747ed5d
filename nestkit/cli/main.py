"""The ``nestkit`` command: a thin Typer app; each verb lives in its own module.

User mistakes (``NestkitError``) are printed one line per problem on stderr with exit code 2;
``--debug`` shows the traceback instead. Nothing here imports torch, so ``nestkit --help`` stays fast.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from nestkit.cli import bench, check_plugin, describe, extract, list_components, manifest, nemo, probe, schema, shard, train, validate

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


COMMANDS = {
    "list-components": list_components.list_components,
    "describe": describe.describe,
    "check-plugin": check_plugin.check_plugin,
    "validate": validate.validate,
    "schema": schema.schema,
    "train": train.train,
    "bench": bench.bench,
    "shard": shard.shard,
    "manifest": manifest.manifest,
    "extract": extract.extract,
    "probe": probe.probe,
    "export-encoder": train.export_encoder,
    "import-nemo": nemo.import_nemo,
    "export-nemo": nemo.export_nemo,
    "convert-nemo-config": nemo.convert_nemo_config,
}


def _summary(command: Callable[..., Any]) -> str:
    """A docstring's first paragraph on one line: rich mode keeps its line breaks in the command list."""
    return " ".join(inspect.getdoc(command).split("\n\n")[0].split())  # type: ignore[union-attr]


for _name, _command in COMMANDS.items():
    app.command(_name, short_help=_summary(_command))(_command)


def main() -> None:
    """Console-script entry point."""
    from nestkit.cli.common import error_lines
    from nestkit.errors import NestkitError

    try:
        app()
    except NestkitError as err:
        if _debug():
            raise
        _exit(error_lines(err), err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a plugin's bug: one line naming the plugin (--debug: the traceback)
        from nestkit.plugin_errors import crash_line
        from nestkit.plugins import get_registry

        line = None if _debug() else crash_line(exc, get_registry())
        if line is None:
            raise
        _exit([line], 1)


def _debug() -> bool:
    return os.environ.get("NESTKIT_DEBUG", "") not in ("", "0") or "--debug" in sys.argv


def _exit(lines: list[str], code: int) -> None:
    from nestkit.train import worker_errors

    if not worker_errors.record(lines):  # a DDP run prints each error once, not once per rank
        print("\n".join(lines), file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
