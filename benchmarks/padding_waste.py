"""Padding waste of duration-bucketed batches vs NeMo-style random fixed-size batches.

    python benchmarks/padding_waste.py                 # table
    python benchmarks/padding_waste.py --json          # one JSON row per (distribution, budget)

Two duration sets: the bundled demo data (270 utterances, 1-4.4 s) and a synthetic log-normal
distribution (median 6 s, sigma 0.6) truncated to 2-20 s. For each padded-seconds budget the
bucketed sampler packs batches of at most that many padded seconds; the random batcher uses
the fixed batch size that carries the same audio on average (``round(budget / mean
duration)``), as a NeMo recipe's ``batch_size`` would. Padding = ``1 - audio / (size x longest)``
summed over one epoch: the share of the encoder's work spent on zeros.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from nestkit.data.samplers import BucketedBatchSampler, ShuffledBatchSampler, padding_fraction


def demo_durations() -> np.ndarray:
    from nestkit.data import demo_manifests

    train, _, _ = demo_manifests()
    with open(train) as f:
        return np.array([json.loads(line)["duration"] for line in f if line.strip()])


def lognormal_durations(n: int, seed: int, low: float = 2.0, high: float = 20.0) -> np.ndarray:
    """``n`` durations from LogNormal(log 6, 0.6) truncated to [low, high] (redrawn, not clipped)."""
    rng = np.random.default_rng(seed)
    out = np.empty(0)
    while out.size < n:
        draw = rng.lognormal(np.log(6.0), 0.6, size=2 * n)
        out = np.concatenate([out, draw[(draw >= low) & (draw <= high)]])
    return out[:n]


def compare(name: str, durations: np.ndarray, budget: float, num_buckets: int, seed: int) -> dict[str, float | int | str]:
    bucketed = BucketedBatchSampler(durations, budget, num_buckets=num_buckets, seed=seed).batches()
    size = max(1, round(budget / float(durations.mean())))
    random = ShuffledBatchSampler(len(durations), size, seed=seed).batches()
    return {
        "distribution": name,
        "utterances": len(durations),
        "budget_s": budget,
        "bucketed_padding": round(padding_fraction(bucketed, durations), 4),
        "bucketed_batches": len(bucketed),
        "random_batch_size": size,
        "random_padding": round(padding_fraction(random, durations), 4),
        "random_batches": len(random),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=50_000, help="size of the synthetic log-normal set")
    parser.add_argument("--budgets", type=float, nargs="+", default=[200.0, 800.0, 1600.0], help="padded seconds per batch (log-normal)")
    parser.add_argument("--demo-budgets", type=float, nargs="+", default=[16.0, 32.0, 64.0], help="padded seconds per batch (demo)")
    parser.add_argument("--num-buckets", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    rows = [compare("demo", demo_durations(), b, args.num_buckets, args.seed) for b in args.demo_budgets]
    synthetic = lognormal_durations(args.utterances, args.seed)
    rows += [compare("lognormal_2_20s", synthetic, b, args.num_buckets, args.seed) for b in args.budgets]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'distribution':<16} {'n':>6} {'budget s':>9} {'bucketed pad':>13} {'batches':>8} {'random bs':>10} {'random pad':>11} {'batches':>8}")
    for r in rows:
        print(
            f"{r['distribution']:<16} {r['utterances']:>6} {r['budget_s']:>9.0f} {r['bucketed_padding']:>13.2%}"
            f" {r['bucketed_batches']:>8} {r['random_batch_size']:>10} {r['random_padding']:>11.2%} {r['random_batches']:>8}"
        )


if __name__ == "__main__":
    main()
