"""Forward/backward time of each NEST component and of the whole step, as JSON.

    python benchmarks/model_step.py --recipe recipes/nest_fast_conformer.yaml --batch 4 --seconds 10 --device cpu

A thin wrapper over ``nestkit.bench`` (the logic of ``nestkit bench``) with every utterance
``--seconds`` long and float32 by default. Stages: preprocessor (clean + noisy audio),
quantizer, masking (no gradients: frozen or no parameters), encoder (forward + backward of a
random output gradient), decoder+loss, and the full training step (optimizer included).
"""

from __future__ import annotations

import argparse
import json

import nestkit.bench as nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/nest_fast_conformer.yaml")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="32", choices=nb.PRECISIONS)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    settings = nb.BenchSettings(
        batch=args.batch, min_sec=args.seconds, max_sec=args.seconds, steps=args.repeats, warmup=1,
        precision=args.precision, compile=False, device=args.device, threads=args.threads,
    )
    print(json.dumps(nb.run_bench(args.recipe, settings), indent=2))


if __name__ == "__main__":
    main()
