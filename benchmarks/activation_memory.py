"""Where a training step's memory goes, and a projection to a large batch, without a GPU.

    python benchmarks/activation_memory.py                                  # NEST-L, 2 x 16 s, bf16 -> batch 128
    python benchmarks/activation_memory.py --device cuda                    # the GPU's own kernels

Autograd keeps the tensors a backward pass needs; with the weights, gradients and optimizer
state they set a step's memory floor. This script runs one real forward at a small batch of
equal-length utterances (every utterance as long as the longest, as padding makes it), counts
each saved tensor's storage once, and attributes it to the module that saved it. Saved memory
is exactly proportional to the batch at a fixed length, so it scales to ``--project-batch``.

It prints JSON: saved bytes per module group at the measured and projected batch, the
parameter/gradient/AdamW-state bytes, and their sum as the projected floor. A real GPU peak adds
allocator fragmentation and the transient buffers of the largest backward op (a few GB at
batch 128), so compare the floor with NeMo's measured 37 GB peak with that margin in mind.

What is saved depends on the device's kernels. On the CPU, autocast runs SDPA in float32
through its math path (three (B, H, T, T) float32 tensors per layer) and dropout keeps its mask
in the input's dtype; CUDA's fused attention keeps the bias once in bfloat16 and dropout a
one-byte mask. CPU figures therefore overstate those rows: use ``--device cuda`` for the real ones.

With ``--activation-checkpointing N`` the first N blocks keep only their inputs; the backward
pass then also holds one block's activations at a time while it replays it (not in the floor).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections import defaultdict
from collections.abc import Collection
from typing import Any

import torch
from torch import Tensor, nn

import nestkit
import nestkit.bench as nb
from nestkit.models.encoder_blocks import checkpoint_encoder_layers, encoder_blocks


def _group(name: str) -> str:
    """A readable module group: 'encoder.layers.3.conv' -> 'encoder.layers.*.conv'."""
    return re.sub(r"\.\d+(?=\.|$)", ".*", name) or "(top)"


def saved_bytes_by_module(model: nn.Module, run: Any, checkpointed: Collection[nn.Module] = ()) -> dict[str, int]:
    """Bytes autograd saves during ``run()``, by the innermost named module active at the time.

    Each storage is counted once (views and re-saves of one tensor are free); parameters
    themselves are not activations and are left out (their low-precision casts are counted).
    A ``checkpointed`` block keeps its tensor inputs instead of what its operations save.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    stack: list[str] = []
    seen: set[int] = set()
    found: dict[str, int] = defaultdict(int)

    def count(t: Tensor, group: str) -> None:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in seen and ptr not in params and storage.nbytes():
            seen.add(ptr)
            found[group] += storage.nbytes()

    def pack(t: Tensor) -> Tensor:
        count(t, _group(stack[-1] if stack else ""))
        return t

    def enter(module: nn.Module, args: tuple[Any, ...], name: str) -> None:
        stack.append(name)
        if module in kept_inputs:
            for a in args:
                if isinstance(a, Tensor):
                    count(a, _group(name) + " (checkpoint inputs)")

    def leave(*_: Any) -> None:  # a forward hook that returns a value would replace the output
        stack.pop()

    kept_inputs = set(checkpointed)
    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(functools.partial(enter, name=name)))
            handles.append(module.register_forward_hook(leave))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run()
    finally:
        for h in handles:
            h.remove()
    return dict(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/nest_fast_conformer.yaml")
    parser.add_argument("--batch", type=int, default=2, help="the larger of the two batches actually run (on the CPU)")
    parser.add_argument("--seconds", type=float, default=16.0, help="every utterance's (padded) length")
    parser.add_argument("--project-batch", type=int, default=128)
    parser.add_argument("--precision", default="bf16-mixed", choices=nb.PRECISIONS)
    parser.add_argument("--top", type=int, default=12, help="module groups listed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--activation-checkpointing", type=int, default=0, help="encoder blocks checkpointed (-1: all)")
    args = parser.parse_args()
    if args.batch < 2:
        raise SystemExit("--batch must be at least 2 (the fit needs two batch sizes)")

    torch.manual_seed(0)
    recipe = nestkit.load_recipe(args.recipe)
    device = nb.resolve_device(args.device)
    model = nestkit.build_model(recipe).to(device).train()
    blocks = checkpoint_encoder_layers(model, args.activation_checkpointing)
    checkpointed = encoder_blocks(model)[:blocks]
    rate = int(getattr(model.preprocessor, "sample_rate", 16000))

    def measure(n: int) -> dict[str, int]:
        batch, _ = nb.synthetic_batch(n, args.seconds, args.seconds, rate, 0, device)
        losses: list[Tensor] = []

        def forward() -> None:
            with nb.autocast(device, args.precision):
                losses.append(nb.forward_loss(model, batch))

        found = saved_bytes_by_module(model, forward, checkpointed)
        losses[0].backward()  # the counted tensors were the real ones: backward runs from them
        model.zero_grad(set_to_none=True)
        return found

    # Saved bytes = fixed part (low-precision weight casts) + per-utterance part: two sizes fit both.
    small, large = measure(1), measure(args.batch)
    projected = {}
    for key in small.keys() | large.keys():
        per_utt = (large.get(key, 0) - small.get(key, 0)) / (args.batch - 1)
        projected[key] = small.get(key, 0) + per_utt * (args.project_batch - 1)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    frozen += sum(b.numel() * b.element_size() for b in model.buffers())
    state = {"weights": trainable + frozen, "gradients": trainable, "adamw_state": 2 * trainable}
    mib = 2**20
    report = {
        "recipe": args.recipe,
        "device": str(device),
        "precision": args.precision,
        "checkpointed_layers": blocks,
        "seconds": args.seconds,
        "measured_batches": [1, args.batch],
        "projected_batch": args.project_batch,
        "saved_activations_mib": {
            "batch_1": round(sum(small.values()) / mib, 1),
            f"batch_{args.batch}": round(sum(large.values()) / mib, 1),
            f"batch_{args.project_batch}_projected": round(sum(projected.values()) / mib, 1),
        },
        "model_state_mib": {k: round(v / mib, 1) for k, v in state.items()},
        "projected_floor_mib": round((sum(projected.values()) + sum(state.values())) / mib, 1),
        "by_module_projected_mib": {
            k: round(v / mib, 1) for k, v in sorted(projected.items(), key=lambda kv: -kv[1])[: args.top]
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
