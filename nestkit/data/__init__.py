"""The audio data path: manifests, decoding, noise, batching, tar shards.

Entry points: :func:`build_dataloader` (the trainer's), :func:`demo_manifests` (bundled demo
data), :func:`write_shards` (``nestkit shard``). Heavy imports (torch, soundfile) happen on
first use, so ``nestkit --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nestkit.lazy import lazy_attributes

if TYPE_CHECKING:
    from nestkit.data.batch import AudioBatch
    from nestkit.data.loader import AudioLoader, build_dataloader, demo_manifests
    from nestkit.data.tarred import write_shards

__all__ = ["AudioBatch", "AudioLoader", "build_dataloader", "demo_manifests", "write_shards"]

_WHERE = {
    "AudioBatch": "nestkit.data.batch",
    "AudioLoader": "nestkit.data.loader",
    "build_dataloader": "nestkit.data.loader",
    "demo_manifests": "nestkit.data.loader",
    "write_shards": "nestkit.data.tarred",
}


__getattr__ = lazy_attributes(__name__, _WHERE)
