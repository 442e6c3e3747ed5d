"""Time and memory of reading a large NeMo manifest (default: 1,000,000 lines).

    python benchmarks/manifest_read.py [--lines N] [--keep speaker] [--workdir DIR]

Writes a manifest like a real corpus (relative paths in speaker folders, a duration, an offset on
every tenth line, a transcript and a speaker key), then reads it with ``read_manifest`` in a
fresh process and prints the seconds taken (wall and CPU: on a shared machine the CPU time is the steadier figure), the memory the result keeps (RSS after minus RSS
before) and the peak RSS added while reading.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

READER = r"""
import gc, json, resource, sys, time
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
from nestkit.data.manifest import read_manifest
import numpy  # imported before the baseline: its own size is not the manifest's
gc.collect()
before = rss_mb()
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start, cpu = time.perf_counter(), time.process_time()
keys = tuple(k for k in sys.argv[2].split(",") if k)
m = read_manifest(sys.argv[1], **({"keep": keys} if keys else {}))
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
gc.collect()
kept = rss_mb() - before
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak_before
print(json.dumps({"items": len(m), "seconds": elapsed, "cpu_seconds": cpu, "kept_mb": kept, "peak_added_mb": max(peak, kept),
                  "first": m.paths[0], "hours": m.report.hours}))
"""


def write_manifest(path: Path, lines: int) -> None:
    """A synthetic manifest: 2,000 speakers, 1-20 s utterances."""
    with path.open("w") as f:
        for i in range(lines):
            entry: dict[str, object] = {
                "audio_filepath": f"audio/spk{i % 2000:04d}/utt_{i:07d}.flac",
                "duration": round(1.0 + (i * 7919 % 19000) / 1000.0, 3),
                "text": "the quick brown fox jumps over the lazy dog",
                "speaker": f"spk{i % 2000:04d}",
            }
            if i % 10 == 0:
                entry["offset"] = 1.5
            f.write(json.dumps(entry) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--keep", default="", help="comma-separated extra keys to keep (e.g. speaker)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the manifest (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        manifest = folder / f"manifest_{args.lines}.json"
        if not manifest.is_file():
            write_manifest(manifest, args.lines)
        out = subprocess.run([sys.executable, "-c", READER, str(manifest), args.keep], check=True, capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    size = manifest.stat().st_size if manifest.exists() else 0
    print(
        f"read {result['items']} lines ({size / 2**20:.0f} MB, {result['hours']:.0f} h) in {result['seconds']:.2f} s"
        f" ({result['cpu_seconds']:.2f} s of CPU);"
        f" memory kept +{result['kept_mb']:.0f} MB, peak +{result['peak_added_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
