"""Activation checkpointing of the encoder blocks: trade compute for memory.

A checkpointed block keeps only its inputs during the forward pass and runs again inside the
backward pass to rebuild what its gradients need. At NEST-L's shapes the blocks hold most of a
step's activation memory (``benchmarks/activation_memory.py``), so checkpointing ``n`` of 17
blocks frees about ``n/17`` of it for about a third more encoder compute in those blocks.

Results are unchanged: the recomputation replays the same dropout masks (the random state is
restored), and BatchNorm does not count the replayed batch in its running statistics. The
blocks stay where they are, so parameter names and checkpoints do not change.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def _running_stats_kept(block: nn.Module) -> Iterator[None]:
    """Undo what the replay does to the running statistics of ``block``'s BatchNorm layers
    (the replay runs the very same operations, so it must not count the batch a second time)."""
    norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    kept = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, values in zip(norms, kept):
                live = [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
                for buffer, value in zip(live, values):
                    buffer.copy_(value)


def _forward_and_replay_contexts(block: nn.Module) -> tuple[contextlib.AbstractContextManager[None], contextlib.AbstractContextManager[None]]:
    return contextlib.nullcontext(), _running_stats_kept(block)


def checkpoint_encoder_layers(model: nn.Module, count: int) -> int:
    """Checkpoint the first ``count`` encoder blocks (-1: all); returns how many (0 without blocks)."""
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or count == 0:
        return 0
    chosen = list(layers) if count < 0 else list(layers)[:count]
    for block in chosen:
        contexts = functools.partial(_forward_and_replay_contexts, block)
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False, context_fn=contexts)
    return len(chosen)
