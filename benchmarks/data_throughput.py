"""Audio seconds per second delivered by nestkit's data path (decode, resample, noise, mixing).

    python benchmarks/data_throughput.py MANIFEST [--noise NOISE] [--workers N] [--batch-seconds S]
    python benchmarks/data_throughput.py demo --workers 0      # the bundled demo data

Runs two epochs (the first warms the noise pool and resampling kernels, the second is timed)
with NEST's batch augmentor (multi_speaker_noise, prob 0.5) at 16 kHz. With 0 workers the
main process uses one thread, so the number is a per-core rate. NeMo's anchor: about 165
audio-s/s per core on the same work.
"""

from __future__ import annotations

import argparse
import time

import torch

from nestkit.data import build_dataloader, demo_manifests
from nestkit.data.config import DatasetConfig

NEST_AUGMENTOR = {
    "name": "multi_speaker_noise", "prob": 0.5, "noise_ratio": 0.5, "min_r_speech": -5.0, "max_r_speech": 5.0,
    "min_r_noise": -5.0, "max_r_noise": 20.0, "min_mix_rate": 0.5, "max_mix_rate": 0.5,
    "min_num_segments": 1, "max_num_segments": 1, "min_num_speakers": 1, "max_num_speakers": 1,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", help="a NeMo manifest, or 'demo'")
    parser.add_argument("--noise", default=None, help="noise manifest (default with 'demo': the demo noise)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch-seconds", type=float, default=None, help="bucketed batches of this many seconds (default: 16 utterances)")
    parser.add_argument("--sample-rate", type=int, default=16000)
    args = parser.parse_args()
    manifest, noise = args.manifest, args.noise
    if manifest == "demo":
        train, _, demo_noise = demo_manifests()
        manifest, noise = str(train), noise or str(demo_noise)
    if args.workers == 0:
        torch.set_num_threads(1)
    cfg = DatasetConfig(
        manifest_filepath=manifest, noise_manifest=noise, sample_rate=args.sample_rate, batch_size=16,
        batch_duration=args.batch_seconds, num_workers=args.workers, batch_augmentor=NEST_AUGMENTOR,
    )
    loader = build_dataloader(cfg, sample_rate=args.sample_rate, train=True, seed=0)
    print(loader.describe())
    for epoch in range(2):
        loader.set_epoch(epoch)
        start, seconds, batches = time.perf_counter(), 0.0, 0
        for batch in loader:
            seconds += float(batch.audio_len.sum()) / args.sample_rate
            batches += 1
        elapsed = time.perf_counter() - start
    rate = seconds / elapsed
    cores = max(args.workers, 1)
    print(
        f"workers={args.workers}: {seconds:.1f} audio-s in {elapsed:.2f} s = {rate:.0f} audio-s/s"
        f" ({rate / cores:.0f} per worker/core; NeMo ~165 per core), {batches} batches,"
        f" padding {loader.padding_fraction:.1%}"
    )


if __name__ == "__main__":
    main()
