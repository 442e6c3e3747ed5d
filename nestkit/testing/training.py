"""Conformance checks of the training side: augmentors, feature augmentors, optimizers,
schedulers and models (:mod:`nestkit.contracts`, :mod:`nestkit.train.contracts`)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from nestkit.contracts import EXTRACTION, LAYERS, BatchAugmentor, Optimizer, Scheduler
from nestkit.data.batch import AudioBatch
from nestkit.testing.harness import (
    BATCH, Subject, audio_batch, bf16, determinism, expect, feature_batch, finite, in_mode, same, saved, seed_cpu,
    seeded, state_round_trip, valid,
)
from nestkit.train.contracts import MaskedTokenOutput, TrainingOutput


def _audio_batch(sample_rate: int) -> AudioBatch:
    """A padded batch as the loader makes it: noise for two of three utterances, noisy = clean + noise."""
    audio, audio_len = audio_batch(sample_rate)
    noise = 0.1 * torch.randn(audio.shape, generator=torch.Generator().manual_seed(16)) * valid(audio_len, audio.shape[1])
    noise_len = audio_len * torch.tensor([1, 1, 0])
    noise = noise * (noise_len > 0)[:, None]
    return AudioBatch(audio=audio, audio_len=audio_len, noise=noise, noise_len=noise_len, noisy_audio=audio + noise,
                      noisy_audio_len=audio_len.clone(), indices=torch.arange(BATCH), seed=3)


def augmentor(s: Subject) -> None:
    aug = s.build()
    batch = _audio_batch(int(s.fields.get("sample_rate", 16000)))
    kept = copy.deepcopy(batch)

    def run(a: Any, seed: int = 0) -> AudioBatch:
        return a(copy.deepcopy(batch), torch.Generator().manual_seed(seed))

    with s.check("contract"):
        expect(isinstance(aug, BatchAugmentor), "not callable as augmentor(batch, generator)")
    with s.check("shapes"):
        out = aug(batch, torch.Generator().manual_seed(0))
        expect(isinstance(out, AudioBatch), f"returned {type(out).__name__}, expected the AudioBatch")
        expect(out.noisy_audio.shape == batch.audio.shape and out.noisy_audio.dtype == torch.float32,
               f"noisy_audio {tuple(out.noisy_audio.shape)} {out.noisy_audio.dtype}, expected {tuple(batch.audio.shape)} float32")
        expect(out.noisy_audio_len.dtype == torch.int64 and tuple(out.noisy_audio_len.shape) == (BATCH,), "noisy_audio_len must be (B,) int64")
        finite(out.noisy_audio, "noisy_audio")
    with s.check("clean target"):
        same(out.audio, kept.audio, "the clean audio (the target)")
        same([batch.audio, batch.noisy_audio, batch.noise], [kept.audio, kept.noisy_audio, kept.noise], "the input batch (modified in place)")
    with s.check("padding"):
        past = ~valid(out.noisy_audio_len, out.noisy_audio.shape[1])
        expect(not bool(out.noisy_audio[past].any()), "noisy_audio is not zero past noisy_audio_len")
    with s.check("generator"):
        same(seeded(1, lambda: run(aug)), seeded(2, lambda: run(aug)), "one generator seed under two global seeds (randomness must come from the generator)")
    determinism(s, run)
    state_round_trip(s, run)


def feature_augmentor(s: Subject) -> None:
    feats, lengths = feature_batch(int(s.fields.get("feat_in", 16)))
    aug = in_mode(s.build(), True)
    with s.check("shapes"):
        out = seeded(0, lambda: aug(feats.clone(), lengths))
        expect(out.shape == feats.shape and out.dtype == feats.dtype, f"output {tuple(out.shape)} {out.dtype}, expected {tuple(feats.shape)} {feats.dtype}")
    with s.check("padding"):
        before = feats.clone()
        out = seeded(0, lambda: aug(feats, lengths))
        same(feats, before, "the input features (modified in place)")
        past = ~valid(lengths, feats.shape[2])[:, None, :].expand_as(feats)
        same(out[past], feats[past], "frames past each length")
    with s.check("autocast"):
        with bf16():
            finite(seeded(0, lambda: aug(feats.clone(), lengths)), "output under bf16 autocast")
    determinism(s, lambda a: in_mode(a, True)(feats.clone(), lengths))
    state_round_trip(s, lambda a: in_mode(a, True)(feats.clone(), lengths))


def _tiny_net() -> nn.Module:
    seed_cpu(17)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))


def _steps(net: nn.Module, opt: Any, n: int, scheduler: Any = None) -> list[float]:
    """``n`` optimizer steps on a fixed regression batch; the losses."""
    x = torch.linspace(-1, 1, 32).view(8, 4)
    y = x.sum(1, keepdim=True).sin()
    losses = []
    for _ in range(n):
        opt.zero_grad()
        value = nn.functional.mse_loss(net(x), y)
        value.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(value.detach()))
    return losses


def optimizer(s: Subject) -> None:
    net = _tiny_net()
    opt = s.build(params=list(net.named_parameters()))
    with s.check("contract"):
        expect(isinstance(opt, Optimizer), "not an optimizer (step, zero_grad, state_dict, load_state_dict, param_groups)")
    with s.check("steps"):
        losses = _steps(net, opt, 10)
        expect(all(torch.isfinite(p).all() for p in net.parameters()), "parameters are not finite after 10 steps")
        expect(losses[-1] < losses[0], f"10 steps did not lower a regression loss ({losses[0]:.4f} -> {losses[-1]:.4f})")
    with s.check("state_dict"):
        twin_net = copy.deepcopy(net)
        twin = s.build(1, params=list(twin_net.named_parameters()))
        twin.load_state_dict(saved(opt.state_dict()))
        _steps(net, opt, 2)
        _steps(twin_net, twin, 2)
        same(list(twin_net.parameters()), list(net.parameters()), "parameters after two steps from a loaded state")
    with s.check("determinism"):
        nets = [_tiny_net(), _tiny_net()]
        for n in nets:
            _steps(n, s.build(0, params=list(n.named_parameters())), 5)
        same(list(nets[0].parameters()), list(nets[1].parameters()), "parameters after two runs from one seed")


def scheduler(s: Subject) -> None:
    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        net = _tiny_net()
        return net, torch.optim.SGD(net.parameters(), lr=0.1)

    net, opt = fresh()
    sched = s.build(optimizer=opt, trainer_max_steps=100)
    with s.check("contract"):
        expect(isinstance(sched, Scheduler), "not a scheduler (step, get_last_lr, state_dict, load_state_dict)")
    with s.check("steps"):
        rates = []
        for _ in range(10):
            _steps(net, opt, 1, sched)
            rates += sched.get_last_lr()
        expect(all(r >= 0 and r == r and r != float("inf") for r in rates), f"learning rates not finite and >= 0: {rates[:5]}...")
    with s.check("state_dict"):
        twin_net, twin_opt = fresh()
        twin = s.build(1, optimizer=twin_opt, trainer_max_steps=100)
        twin_net.load_state_dict(net.state_dict())
        twin_opt.load_state_dict(saved(opt.state_dict()))
        twin.load_state_dict(saved(sched.state_dict()))
        _steps(net, opt, 1, sched)
        _steps(twin_net, twin_opt, 1, twin)
        expect(twin.get_last_lr() == sched.get_last_lr(), f"rates after a loaded state: {twin.get_last_lr()} vs {sched.get_last_lr()}")


def model(s: Subject) -> None:
    sample_rate = int(s.fields.get("sample_rate", 16000))
    audio, audio_len = audio_batch(sample_rate, (1.0, 0.8, 0.6))
    noisy = audio + 0.02 * torch.randn(audio.shape, generator=torch.Generator().manual_seed(18)) * valid(audio_len, audio.shape[1])

    def forward(m: Any, training: bool = True) -> Any:
        return in_mode(m, training)(audio, audio_len, noisy_audio=noisy, noisy_audio_len=audio_len)

    net = s.build()
    with s.check("output"):
        out = seeded(0, lambda: forward(net))
        expect(isinstance(out, TrainingOutput), f"forward returned {type(out).__name__}, expected a TrainingOutput (loss, masked_accuracy, masked_fraction)")
        for name in ("loss", "masked_accuracy", "masked_fraction"):
            value = getattr(out, name)
            expect(isinstance(value, Tensor) and value.dim() == 0, f"{name} must be a 0-dim tensor")
            finite(value, name)
        expect(0 <= float(out.masked_fraction) <= 1 and 0 <= float(out.masked_accuracy) <= 1, "masked_accuracy and masked_fraction must lie in [0, 1]")
    with s.check("backward"):
        out.loss.backward()
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        expect(all(g is None or bool(torch.isfinite(g).all()) for g in grads), "a gradient is not finite")
        expect(any(g is not None and bool(g.abs().sum() > 0) for g in grads), "no parameter gets a gradient")
    if isinstance(out, MaskedTokenOutput):
        with s.check("target statistics"):
            n = out.token_mask.shape[1] if out.token_mask.dim() == 2 else -1
            expect(out.token_mask.dtype == torch.bool and out.token_valid.dtype == torch.bool and n >= 0
                   and tuple(out.token_valid.shape) == (BATCH, n), "token_mask and token_valid must be (B, T'') bool")
            expect(out.log_probs.shape[0] == BATCH and out.log_probs.shape[1] >= n and out.tokens.shape[1] >= n,
                   f"log_probs {tuple(out.log_probs.shape)} and tokens {tuple(out.tokens.shape)} must cover T''={n} positions")
    else:
        s.skip("target statistics", "the output is no MaskedTokenOutput: the trainer computes no target statistics")
    with s.check("autocast"):
        with bf16():
            finite(seeded(0, lambda: forward(net)).loss, "the loss under bf16 autocast")
    determinism(s, lambda m: forward(m, False).loss)
    state_round_trip(s, lambda m: forward(m, False).loss)
    if EXTRACTION.missing(net):
        s.skip(EXTRACTION.name, f"not provided ({EXTRACTION.needed_by} refuse this model)")
        return
    with s.check(EXTRACTION.name):
        feats, lengths = net.extract(audio, audio_len)
        expect(len(feats) == 1 and feats[0].dim() == 3 and feats[0].shape[0] == BATCH, "extract() must give one (B, d_model, T') tensor")
        expect(tuple(lengths.shape) == (BATCH,) and int(lengths.max()) <= feats[0].shape[2], "extract() lengths must be (B,) within T'")
        if not LAYERS.missing(net.encoder):
            layers, _ = net.extract(audio, audio_len, layers=[0])
            expect(len(layers) == 1 and layers[0].shape[0] == BATCH, "extract(layers=[0]) must give one (B, d_model, T') tensor")
