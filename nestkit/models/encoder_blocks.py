"""How the encoder blocks run: compiled, and/or checkpointed (shared by ``nestkit train`` and ``nestkit bench``).

Both work on the blocks in place, so parameter names (and checkpoints) do not change.

**Compiling.** Only the Conformer blocks go through ``torch.compile``: they hold nearly all the
FLOPs, and their element-wise work (LayerNorm, SiLU, GLU, BatchNorm, residuals) is what fusing
saves. The preprocessor, masking and quantizer stay eager, so variable-length batches do not
multiply recompilations.

**Activation checkpointing** trades compute for memory. A checkpointed block keeps only its
inputs during the forward pass and runs again inside the backward pass to rebuild what its
gradients need. At NEST-L's shapes the blocks hold most of a step's activation memory
(``benchmarks/activation_memory.py``), so checkpointing ``n`` of 17 blocks frees about ``n/17``
of it for about a third more encoder compute in those blocks. Results are unchanged: the replay
draws the same dropout masks (the random state is restored), and BatchNorm does not count the
replayed batch in its running statistics.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nestkit.contracts import BlockEncoder, EncoderModel


def encoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The ``blocks()`` of the model's encoder (empty when the model has no encoder, or its
    encoder no blocks: :class:`nestkit.contracts.BlockEncoder`)."""
    encoder = model.encoder if isinstance(model, EncoderModel) else None
    return list(encoder.blocks()) if isinstance(encoder, BlockEncoder) else []


def compile_encoder_layers(model: nn.Module) -> int:
    """Compile each encoder block in place; returns how many (0 when the model has none)."""
    blocks = encoder_blocks(model)
    for block in blocks:
        block.compile()
    return len(blocks)


@contextlib.contextmanager
def _running_stats_kept(block: nn.Module) -> Iterator[None]:
    """Undo what the replay does to the running statistics of ``block``'s BatchNorm layers
    (the replay runs the very same operations, so it must not count the batch a second time)."""
    norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    kept = [(m, {name: b.clone() for name, b in m.named_buffers(recurse=False)}) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, values in kept:
                for name, value in values.items():
                    getattr(m, name).copy_(value)


def _forward_and_replay_contexts(block: nn.Module) -> tuple[contextlib.AbstractContextManager[None], contextlib.AbstractContextManager[None]]:
    return contextlib.nullcontext(), _running_stats_kept(block)


def checkpoint_encoder_layers(model: nn.Module, count: int) -> int:
    """Checkpoint the first ``count`` encoder blocks (-1: all); returns how many (0 without blocks)."""
    chosen = encoder_blocks(model) if count < 0 else encoder_blocks(model)[:count]
    for block in chosen:
        contexts = functools.partial(_forward_and_replay_contexts, block)
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False, context_fn=contexts)
    return len(chosen)
