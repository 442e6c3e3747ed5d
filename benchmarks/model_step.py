"""Forward+backward time and peak memory of each NEST component, as JSON.

    python benchmarks/model_step.py --recipe recipes/nest_fast_conformer.yaml --batch 4 --seconds 10 --device cpu

Stages: preprocessor (clean + noisy audio), quantizer, masking (no gradients: they are frozen
or have no parameters), encoder (forward + backward of a random output gradient), decoder+loss
(forward + backward), and the whole training step (model forward + loss backward).
Memory: on CUDA the peak allocated during the stage; on CPU the process's peak RSS so far.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import nestkit


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(fn: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, float]:
    times = []
    peak = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
        if device.type == "cuda":
            peak = max(peak, torch.cuda.max_memory_allocated(device) / 2**20)
        else:
            peak = max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    key = "peak_allocated_mb" if device.type == "cuda" else "process_peak_rss_mb"
    return {"seconds": round(statistics.median(times), 4), key: round(peak, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/nest_fast_conformer.yaml")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = nestkit.build_model(args.recipe).to(device).train()
    rate = model.preprocessor.sample_rate
    samples = int(args.seconds * rate)
    audio = 0.1 * torch.randn(args.batch, samples, device=device)
    noisy = audio + 0.01 * torch.randn_like(audio)
    lengths = torch.full((args.batch,), samples, device=device)
    feats, feats_len = model.preprocessor(audio, lengths)
    noisy_feats, _ = model.preprocessor(noisy, lengths)
    masked, masks = model.masking(noisy_feats, feats_len)
    tokens = model.quantizer(feats)
    encoded, encoded_len = model.encoder(masked, feats_len)
    grad = torch.randn_like(encoded)

    def encoder_step() -> None:
        out, _ = model.encoder(masked, feats_len)
        out.backward(grad)

    def head_step() -> None:
        enc = encoded.detach().requires_grad_(True)
        loss = model.loss(masks=masks, log_probs=model.decoder(enc), tokens=tokens, encoded_len=encoded_len)
        loss.backward()

    def full_step() -> None:
        model(audio, lengths, noisy, lengths).loss.backward()

    stages = {
        "preprocessor": lambda: (model.preprocessor(audio, lengths), model.preprocessor(noisy, lengths)),
        "quantizer": lambda: model.quantizer(feats),
        "masking": lambda: model.masking(noisy_feats, feats_len),
        "encoder": encoder_step,
        "decoder+loss": head_step,
        "train_step": full_step,
    }
    report: dict[str, Any] = {
        "recipe": args.recipe, "device": str(device), "batch": args.batch, "seconds_per_utterance": args.seconds,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    for name, fn in stages.items():
        fn()  # warm-up
        model.zero_grad(set_to_none=True)
        report[name] = _measure(fn, device, args.repeats)
        model.zero_grad(set_to_none=True)
    step = report["train_step"]["seconds"]
    report["audio_seconds_per_second"] = round(args.batch * args.seconds / step, 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
