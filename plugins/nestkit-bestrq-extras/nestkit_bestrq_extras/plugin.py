"""The entry point nestkit loads: registers this package's components."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nestkit
from nestkit_bestrq_extras.kmeans_quantizer import KMeansQuantizerConfig, build_kmeans
from nestkit_bestrq_extras.label_smoothed_mlm import LabelSmoothedMLMConfig, build_label_smoothed_mlm


@nestkit.hookimpl
def nestkit_register_components(register: Callable[[nestkit.Component], None]) -> None:
    register(
        nestkit.Component(
            kind="quantizer",
            name="kmeans",
            factory=build_kmeans,
            config=KMeansQuantizerConfig,
            summary="nearest-centroid targets from a fitted k-means file (one matmul + argmax, float32, frozen)",
        )
    )
    register(
        nestkit.Component(
            kind="loss",
            name="label_smoothed_mlm",
            factory=build_label_smoothed_mlm,
            config=LabelSmoothedMLMConfig,
            summary="masked-token NLL with label smoothing (multi_mlm's keys; equal to it at 0)",
        )
    )


@nestkit.hookimpl
def nestkit_check_section(kind: str, name: str, workdir: Path) -> dict[str, Any] | None:
    """A small k-means section for `nestkit check-plugin`: its centroids file written into ``workdir``."""
    if (kind, name) != ("quantizer", "kmeans"):
        return None
    import torch

    centroids = workdir / "centroids.pt"
    torch.save(torch.randn(16, 16 * 4, generator=torch.Generator().manual_seed(0)), centroids)
    return {"name": "kmeans", "feat_in": 16, "num_classes": 16, "combine_time_steps": 4, "centroids_path": str(centroids)}
