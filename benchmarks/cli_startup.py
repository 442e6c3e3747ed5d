"""How long `nestkit --help` takes (it must not import torch).

    python benchmarks/cli_startup.py [--runs 10]

Prints JSON: median/min/max wall seconds of `nestkit --help`, next to `python -c pass` measured
in the same run, and whether torch was imported by the CLI module.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    exe = shutil.which("nestkit")
    cli = [exe, "--help"] if exe else [sys.executable, "-m", "nestkit.cli.main", "--help"]
    help_times = timed(cli, args.runs)
    python_times = timed([sys.executable, "-c", "pass"], args.runs)
    torch_loaded = subprocess.run(
        [sys.executable, "-c", "import sys, nestkit.cli.main; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip() == "True"
    print(json.dumps({
        "nestkit_help_s": {"median": statistics.median(help_times), "min": min(help_times), "max": max(help_times)},
        "python_startup_s": statistics.median(python_times),
        "torch_imported_by_cli": torch_loaded,
    }, indent=2))


if __name__ == "__main__":
    main()
