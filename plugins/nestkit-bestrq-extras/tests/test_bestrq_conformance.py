"""Both components pass nestkit's conformance checks for their kinds (nestkit.testing)."""

from __future__ import annotations

from pathlib import Path

import torch

from nestkit.testing import check_component


def test_kmeans_conforms(tmp_path: Path) -> None:
    centroids = tmp_path / "centroids.pt"
    torch.save(torch.randn(32, 8 * 2), centroids)
    section = {"feat_in": 8, "num_classes": 32, "combine_time_steps": 2, "centroids_path": str(centroids)}
    report = check_component("quantizer", "kmeans", section)
    assert {"shapes", "padding", "autocast", "state_dict"} <= set(report.passed)
    check_component("quantizer", "kmeans", {**section, "dist_fn": "cosine", "squeeze_single": True})


def test_label_smoothed_mlm_conforms() -> None:
    report = check_component("loss", "label_smoothed_mlm", {"label_smoothing": 0.2, "combine_time_steps": 4, "num_decoders": 2})
    assert {"masked tokens only", "nothing masked", "autocast"} <= set(report.passed)
