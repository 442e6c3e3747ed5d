"""k-means fitting and the kmeans quantizer: real clusters found, nearest centroids picked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import nestkit
from nestkit.errors import RecipeError
from nestkit_bestrq_extras.fit_kmeans import fit_kmeans, main
from nestkit_bestrq_extras.kmeans_quantizer import KMeansQuantizer, stack_frames

D, C = 6, 4  # features, frames per token


def _section(path: Path, **kw: object) -> dict[str, object]:
    return {"name": "kmeans", "feat_in": D, "num_classes": 16, "combine_time_steps": C, "centroids_path": str(path), **kw}


@pytest.fixture
def centroid_file(tmp_path: Path) -> Path:
    path = tmp_path / "centroids.pt"
    torch.save(torch.randn(16, D * C, generator=torch.Generator().manual_seed(0)), path)
    return path


def test_fit_recovers_well_separated_clusters() -> None:
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(5, 12, generator=g) * 10
    labels = torch.randint(5, (2000,), generator=g)
    points = centers[labels] + 0.1 * torch.randn(2000, 12, generator=g)
    fitted = fit_kmeans(points, 5, iters=10, seed=0)
    assert fitted.shape == (5, 12) and fitted.dtype == torch.float32
    nearest = torch.cdist(centers, fitted).min(1).values
    assert float(nearest.max()) < 0.05  # every true centre has a fitted one within noise / sqrt(n)
    assert torch.equal(fitted, fit_kmeans(points, 5, iters=10, seed=0))


def test_fit_keeps_every_cluster_populated_and_rejects_too_few_points() -> None:
    points = torch.cat([torch.zeros(50, 3), torch.ones(50, 3)])  # two distinct points, four clusters asked
    fitted = fit_kmeans(points, 4, iters=5, seed=0)
    assert torch.isfinite(fitted).all() and fitted.shape == (4, 3)
    with pytest.raises(ValueError, match="3 feature vectors cannot make 4 clusters"):
        fit_kmeans(torch.randn(3, 2), 4)


@pytest.mark.parametrize("dist_fn", ["l2", "cosine"])
def test_tokens_are_the_nearest_centroids_of_stacked_frames(centroid_file: Path, dist_fn: str) -> None:
    quantizer = nestkit.build("quantizer", _section(centroid_file, dist_fn=dist_fn))
    assert isinstance(quantizer, KMeansQuantizer) and not list(quantizer.parameters())
    feats = torch.randn(3, D, 4 * C + 3)  # 3 frames left over: dropped like random_projection does
    tokens = quantizer(feats)
    assert tokens.shape == (3, 4, 1) and tokens.dtype == torch.int64
    cents = torch.load(centroid_file, weights_only=True)
    stacked = torch.stack([torch.cat([feats[b, :, t * C + k] for k in range(C)]) for b in range(3) for t in range(4)])
    if dist_fn == "l2":
        expected = torch.cdist(stacked.double(), cents.double()).argmin(1)
    else:
        expected = torch.nn.functional.cosine_similarity(stacked[:, None], cents[None], dim=-1).argmax(1)
    assert torch.equal(tokens.reshape(-1), expected)
    assert torch.equal(stack_frames(feats, C).reshape(-1, D * C), stacked)


def test_npy_books_squeeze_and_float32_under_autocast(tmp_path: Path) -> None:
    books = np.random.default_rng(0).standard_normal((2, 16, D * C)).astype(np.float32)
    np.save(tmp_path / "books.npy", books)
    two = nestkit.build("quantizer", _section(tmp_path / "books.npy", num_books=2))
    feats = torch.randn(2, D, 2 * C)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = two(feats)
    assert tokens.shape == (2, 2, 2)
    for book in range(2):
        one = KMeansQuantizer(torch.from_numpy(books[book : book + 1]), combine_time_steps=C, dist_fn="l2", squeeze_single=True)
        assert torch.equal(one(feats), tokens[..., book])
    assert "centroids" in two.state_dict()


@pytest.mark.parametrize(
    ("make", "needle"),
    [(lambda p: p / "missing.pt", "missing.pt' does not exist"),
     (lambda p: (torch.save(torch.randn(16, 5), p / "short.pt"), p / "short.pt")[1], "holds shape (16, 5), expected (16, 24)"),
     (lambda p: ((p / "c.txt").write_text("1"), p / "c.txt")[1], "must end in .pt or .npy"),
     (lambda p: ((p / "junk.pt").write_text("junk"), p / "junk.pt")[1], "junk.pt' cannot be read"),
     (lambda p: (torch.save({"a": 1}, p / "dict.pt"), p / "dict.pt")[1], "holds dict, expected a 2-D or 3-D float tensor")],
)
def test_bad_centroid_files_are_one_line_errors_naming_the_file(tmp_path: Path, make, needle: str) -> None:  # noqa: ANN001
    path = make(tmp_path)
    with pytest.raises(RecipeError) as info:
        nestkit.build("quantizer", _section(path))
    assert needle in str(info.value) and str(info.value).startswith("quantizer: centroids file")
    assert "\n" not in str(info.value)


def test_script_fits_demo_features_that_the_quantizer_loads(tmp_path: Path) -> None:
    demo = nestkit.data.demo_manifests()[1]
    lines = demo.read_text().splitlines()[:6]
    manifest = tmp_path / "small.json"
    manifest.write_text("\n".join(
        json.dumps({**json.loads(x), "audio_filepath": str(demo.parent / json.loads(x)["audio_filepath"])}) for x in lines
    ))
    out = tmp_path / "demo.pt"
    assert main([str(manifest), str(out), "--num-classes", "8", "--iters", "3"]) == 0
    cents = torch.load(out, weights_only=True)
    assert cents.shape == (8, 80 * 8) and torch.isfinite(cents).all()
    quantizer = nestkit.build("quantizer", {"name": "kmeans", "feat_in": 80, "num_classes": 8, "combine_time_steps": 8,
                                            "centroids_path": str(out)})
    assert quantizer(torch.randn(1, 80, 64)).shape == (1, 8, 1)
    assert main([str(manifest), str(tmp_path / "x.pt"), "--num-classes", "100000"]) == 2
