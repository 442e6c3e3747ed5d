"""Fit k-means centroids for the ``kmeans`` quantizer.

Library use: ``fit_kmeans(features (N, dim), num_classes, iters, seed) -> centroids (K, dim)``.
Script use (computes log-mel features with the recipe's preprocessor, eval mode, and stacks
``combine_time_steps`` frames exactly as the quantizer does)::

    python -m nestkit_bestrq_extras.fit_kmeans MANIFEST OUT.pt --num-classes 128
    python -m nestkit_bestrq_extras.fit_kmeans "$(python -c 'import nestkit.data as d; print(d.demo_manifests()[0])')" \\
        centroids.pt --num-classes 128 --recipe nest_demo.yaml

Full-batch Lloyd iterations in torch (k-means++ seeding), chunked so the (N, K) distance
matrix never has to exist at once; empty clusters are re-seeded with the worst-fit vectors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 24  # distance entries computed at once


def _chunks(n: int, k: int) -> range:
    return range(0, n, max(1, CHUNK_ELEMENTS // max(k, 1)))


def assign(features: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centroid of each row and the squared distance to it: ((N,) int64, (N,) float)."""
    c_sq = (centroids * centroids).sum(1)
    labels = torch.empty(features.shape[0], dtype=torch.long, device=features.device)
    dist = torch.empty(features.shape[0], dtype=features.dtype, device=features.device)
    step = _chunks(features.shape[0], centroids.shape[0]).step
    for start in range(0, features.shape[0], step):
        x = features[start : start + step]
        d = (x * x).sum(1, keepdim=True) - 2.0 * x @ centroids.T + c_sq[None, :]
        best, idx = d.min(1)
        labels[start : start + step], dist[start : start + step] = idx, best.clamp_min(0.0)
    return labels, dist


def _kmeans_plus_plus(features: Tensor, k: int, g: torch.Generator) -> Tensor:
    """k-means++ seeding: each new centroid drawn with probability proportional to D(x)^2."""
    n = features.shape[0]
    first = int(torch.randint(n, (1,), generator=g, device=g.device))
    centroids = [features[first]]
    closest = ((features - features[first]) ** 2).sum(1)
    for _ in range(1, k):
        total = closest.sum()
        if float(total) <= 0.0:  # fewer distinct points than k: duplicate, Lloyd re-seeds
            pick = int(torch.randint(n, (1,), generator=g, device=g.device))
        else:
            pick = int(torch.multinomial(closest / total, 1, generator=g))
        centroids.append(features[pick])
        closest = torch.minimum(closest, ((features - features[pick]) ** 2).sum(1))
    return torch.stack(centroids)


def fit_kmeans(features: Tensor, num_classes: int, iters: int = 20, seed: int = 0) -> Tensor:
    """Centroids (num_classes, dim) float32 of ``features`` (N, dim) after ``iters`` Lloyd steps."""
    if features.dim() != 2:
        raise ValueError(f"features must be (N, dim), got shape {tuple(features.shape)}")
    n = features.shape[0]
    if n < num_classes:
        raise ValueError(f"{n} feature vectors cannot make {num_classes} clusters")
    x = features.float()
    g = torch.Generator(device=x.device).manual_seed(seed)
    centroids = _kmeans_plus_plus(x, num_classes, g)
    for _ in range(iters):
        labels, dist = assign(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=num_classes)
        new = sums / counts.clamp_min(1)[:, None].to(x.dtype)
        empty = counts == 0
        n_empty = int(empty.sum())
        if n_empty:  # re-seed empty clusters with the vectors that fit worst
            new[empty] = x[dist.topk(n_empty).indices]
        if torch.equal(new, centroids):
            break
        centroids = new
    return centroids.contiguous()


# ---------------------------------------------------------------------------- the script


def manifest_vectors(
    manifest: str, preprocessor_section: dict, combine_time_steps: int, *, batch_size: int = 16
) -> Tensor:
    """Stacked log-mel vectors (N, features * combine) of every utterance in ``manifest`` (valid frames only)."""
    import nestkit
    from nestkit.data.audio import AudioReadError, read_audio
    from nestkit.data.batch import pad_stack
    from nestkit.data.manifest import read_manifest
    from nestkit_bestrq_extras.kmeans_quantizer import stack_frames

    items = read_manifest(manifest)
    pre = nestkit.build("preprocessor", preprocessor_section).eval()
    rate = int(preprocessor_section.get("sample_rate", 16000))
    vectors: list[Tensor] = []
    for start in range(0, len(items), batch_size):
        audio = []
        for i in range(start, min(start + batch_size, len(items))):
            try:
                audio.append(read_audio(items.paths[i], sample_rate=rate, offset=float(items.offsets[i]),
                                        duration=float(items.durations[i]) or None))
            except AudioReadError as exc:
                print(f"skipped {items.paths[i]}: {exc}", file=sys.stderr)
        if not audio:
            continue
        lengths = torch.tensor([a.shape[0] for a in audio])
        feats, feats_len = pre(pad_stack(audio), lengths)
        stacked = stack_frames(feats, combine_time_steps)  # (B, T', dim)
        valid = torch.arange(stacked.shape[1])[None, :] < (feats_len // combine_time_steps)[:, None]
        vectors.append(stacked[valid])
    if not vectors:
        raise ValueError(f"{manifest}: no readable audio")
    return torch.cat(vectors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nestkit_bestrq_extras.fit_kmeans",
        description="Fit k-means centroids on log-mel features of a manifest, for the 'kmeans' quantizer.",
    )
    parser.add_argument("manifest", help="NeMo JSON-lines manifest (audio_filepath, duration)")
    parser.add_argument("out", type=Path, help="output file: .pt (torch.save) or .npy")
    parser.add_argument("--num-classes", type=int, required=True, help="number of centroids (the recipe's num_classes)")
    parser.add_argument("--recipe", default="nest_demo.yaml",
                        help="recipe whose model.preprocessor and encoder.subsampling_factor are used (a path or a bundled name)")
    parser.add_argument("--combine-time-steps", type=int, default=None,
                        help="frames per vector (default: the recipe's encoder.subsampling_factor)")
    parser.add_argument("--iters", type=int, default=20, help="Lloyd iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-vectors", type=int, default=200_000, help="random subset size to fit on (bounds memory)")
    args = parser.parse_args(argv)

    from nestkit.errors import NestkitError

    try:
        if args.out.suffix not in (".pt", ".npy"):
            raise ValueError(f"{args.out}: the output must end in .pt or .npy")
        model = _load_recipe(args.recipe).get("model") or {}
        if not isinstance(model.get("preprocessor"), dict):
            raise ValueError(f"{args.recipe}: the recipe has no model.preprocessor section")
        combine = args.combine_time_steps or int((model.get("encoder") or {}).get("subsampling_factor", 1))
        vectors = manifest_vectors(args.manifest, model["preprocessor"], combine)
        if vectors.shape[0] > args.max_vectors:
            keep = torch.randperm(vectors.shape[0], generator=torch.Generator().manual_seed(args.seed))[: args.max_vectors]
            vectors = vectors[keep]
        centroids = fit_kmeans(vectors, args.num_classes, args.iters, args.seed)
    except (NestkitError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".npy":
        import numpy as np

        np.save(args.out, centroids.numpy())
    else:
        torch.save(centroids, args.out)
    print(f"wrote {args.out}: {centroids.shape[0]} centroids of size {centroids.shape[1]} "
          f"from {vectors.shape[0]} vectors ({combine} frames each)")
    return 0


def _load_recipe(name: str) -> dict:
    """The resolved recipe mapping (extends and ${...} applied). Not validated as a whole: the
    recipe may name the very centroid file this script is about to write."""
    from nestkit.recipe import bundled_recipe, interpolate, load_raw

    path = Path(name)
    if not path.exists():
        path = bundled_recipe(name) or path
    return interpolate(load_raw(path))


if __name__ == "__main__":
    raise SystemExit(main())
