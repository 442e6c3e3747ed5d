"""Conformance checks of the model's parts: preprocessor, encoder (and its capabilities),
masking, quantizer, decoder, loss. Each exercises the kind's contract in
:mod:`nestkit.contracts` on tiny inputs sized from the component's config."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from nestkit.contracts import BLOCKS, LAYERS, SUBSAMPLING, Loss
from nestkit.testing.harness import (
    BATCH, Subject, audio_batch, bf16, determinism, expect, feature_batch, finite, in_mode, new_padding, same,
    seeded, state_round_trip, valid,
)

DEFAULT_CHANNELS = 16  # input size when a config has no feat_in
# What the next part (a decoder's float32 weights) can take: float32, or a half type under autocast.
AUTOCAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _pair(result: Any, what: str) -> tuple[Any, Any]:
    """``result`` as the two outputs ``what`` names ("encoded, lengths"), or a failed check saying
    what came back instead (not Python's "too many values to unpack")."""
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        got = f"{type(result).__name__} of {len(result)}" if isinstance(result, (tuple, list)) else type(result).__name__
        raise AssertionError(f"returned {got}, expected a pair ({what})")
    return result[0], result[1]


def _float32(tensor: Tensor, what: str) -> None:
    expect(tensor.dtype == torch.float32, f"{what} is {tensor.dtype}, expected float32 (the next part's weights are float32)")


def _repeatable(s: Subject, run: Any) -> None:
    """Two calls in eval mode under different seeds agree: randomness (noise, dropout) belongs to
    training mode only; checked before padding, which would otherwise take the blame."""
    with s.check("repeatable"):
        same(seeded(1, run), seeded(2, run), "two calls on the same input in eval mode (draw random numbers only "
             "when self.training)", atol=1e-6)


def _lengths(lengths: Tensor, size: int, what: str) -> None:
    expect(lengths.dtype == torch.int64 and tuple(lengths.shape) == (BATCH,), f"{what}: expected (B,) int64, got {tuple(lengths.shape)} {lengths.dtype}")
    expect(bool((lengths <= size).all()) and bool((lengths > 0).all()), f"{what}: {lengths.tolist()} not within 1..{size}")
    expect(bool((lengths[:-1] >= lengths[1:]).all()), f"{what}: {lengths.tolist()}: a longer input got fewer frames")


def preprocessor(s: Subject) -> None:
    audio, audio_len = audio_batch(int(s.fields.get("sample_rate", 16000)))
    pre = in_mode(s.build(), False)
    with s.check("shapes"):
        feats, feats_len = _pair(pre(audio, audio_len), "features, lengths")
        expect(feats.dim() == 3 and feats.shape[0] == BATCH, f"features of shape {tuple(feats.shape)}, expected (B, D, T)")
        if "features" in s.fields:
            expect(feats.shape[1] == s.fields["features"], f"{feats.shape[1]} feature channels, the config says features={s.fields['features']}")
        expect(feats.dtype == torch.float32, f"features are {feats.dtype}, expected float32")
        _lengths(feats_len, feats.shape[2], "feature lengths")
    _repeatable(s, lambda: pre(audio, audio_len))
    with s.check("padding"):
        again, again_len = pre(new_padding(audio, audio_len), audio_len)
        inside = valid(feats_len, feats.shape[2])[:, None, :]
        same(again * inside, feats * inside, "valid frames when the samples past each length change", atol=1e-4)
        same(again_len, feats_len, "lengths when the padding changes")
    with s.check("autocast"):
        with bf16():
            cast, cast_len = pre(audio, audio_len)
        expect(cast.dtype == torch.float32, f"features under bf16 autocast are {cast.dtype}, expected float32")
        same(cast, feats, "features under bf16 autocast", atol=1e-4)
        same(cast_len, feats_len, "lengths under bf16 autocast")
    determinism(s, lambda p: in_mode(p, False)(audio, audio_len))
    state_round_trip(s, lambda p: in_mode(p, False)(audio, audio_len))


def encoder(s: Subject) -> None:
    feats, lengths = feature_batch(int(s.fields.get("feat_in", DEFAULT_CHANNELS)))
    enc = in_mode(s.build(), False)
    with s.check("shapes"):
        out, out_len = _pair(enc(feats, lengths), "encoded, lengths")
        expect(out.dim() == 3 and out.shape[0] == BATCH, f"output of shape {tuple(out.shape)}, expected (B, d_model, T')")
        feat_out, d_model = s.fields.get("feat_out", -1), s.fields.get("d_model")
        size = feat_out if isinstance(feat_out, int) and feat_out > 0 else d_model
        if size is not None:
            expect(out.shape[1] == size, f"{out.shape[1]} output channels, the config says {size}")
        factor = s.fields.get("subsampling_factor")
        if isinstance(factor, int):
            expect(abs(out.shape[2] - feats.shape[2] / factor) <= 1, f"{out.shape[2]} frames out of {feats.shape[2]}, subsampling_factor={factor}")
        finite(out, "output")
        _float32(out, "output")
        _lengths(out_len, out.shape[2], "output lengths")
    _repeatable(s, lambda: enc(feats, lengths))
    with s.check("padding"):
        again, again_len = enc(new_padding(feats, lengths), lengths)
        inside = valid(out_len, out.shape[2])[:, None, :]
        same(again * inside, out * inside, "valid output frames when the features past each length change", atol=1e-4)
        same(again_len, out_len, "lengths when the padding changes")
    with s.check("autocast"):
        with bf16():
            cast, cast_len = enc(feats, lengths)
        finite(cast, "output under bf16 autocast")
        expect(cast.dtype in AUTOCAST_DTYPES, f"output under bf16 autocast is {cast.dtype}, expected bfloat16, float16 or float32")
        expect(cast.shape == out.shape, f"output under bf16 autocast has shape {tuple(cast.shape)}, not {tuple(out.shape)}")
        same(cast_len, out_len, "lengths under bf16 autocast")
    with s.check("backward"):
        trained = in_mode(s.build(), True)
        (trained(feats, lengths)[0] * valid(out_len, out.shape[2])[:, None, :]).square().mean().backward()
        grads = [p.grad for p in trained.parameters() if p.requires_grad]
        expect(bool(grads) and all(g is not None and bool(torch.isfinite(g).all()) for g in grads), "parameters without a finite gradient")
        expect(any(bool(g.abs().sum() > 0) for g in grads if g is not None), "no parameter gets a gradient")
    determinism(s, lambda e: in_mode(e, False)(feats, lengths))
    state_round_trip(s, lambda e: in_mode(e, False)(feats, lengths))
    _capabilities(s, enc, feats, lengths, out, out_len)


def _capabilities(s: Subject, enc: Any, feats: Tensor, lengths: Tensor, out: Tensor, out_len: Tensor) -> None:
    """The optional capabilities the encoder has, each against its promise."""
    if SUBSAMPLING.missing(enc):
        s.skip(SUBSAMPLING.name, f"not provided ({SUBSAMPLING.needed_by} refuses this encoder)")
    else:
        with s.check(SUBSAMPLING.name):
            x, x_len = enc.subsample(feats, lengths)
            expect(x.dim() == 3 and x.shape[0] == BATCH and x.shape[2] == enc.d_model,
                   f"subsample gave {tuple(x.shape)}, expected (B, T', d_model={enc.d_model})")
            expect(isinstance(enc.subsampling_factor, int) and enc.subsampling_factor >= 1, f"subsampling_factor {enc.subsampling_factor!r}")
            same(enc.encode(x, x_len), (out, out_len), "encode(*subsample(f, l)) against forward(f, l)", atol=1e-5)
    if BLOCKS.missing(enc):
        s.skip(BLOCKS.name, f"not provided ({BLOCKS.needed_by} refuse this encoder)")
    else:
        with s.check(BLOCKS.name):
            blocks = list(enc.blocks())
            inside = {id(m) for m in enc.modules()} if isinstance(enc, nn.Module) else set()
            expect(bool(blocks), "blocks() is empty")
            expect(all(isinstance(b, nn.Module) and id(b) in inside for b in blocks), "blocks() must return the encoder's own submodules")
    if LAYERS.missing(enc):
        s.skip(LAYERS.name, f"not provided ({LAYERS.needed_by} refuse this encoder)")
        return
    with s.check(LAYERS.name):
        outs, outs_len = enc.forward_layers(feats, lengths, [0, -1])
        expect(len(outs) == 2 and all(o.dim() == 3 and o.shape[0] == BATCH and o.shape[2] == out.shape[2] for o in outs),
               f"forward_layers([0, -1]) gave {[tuple(o.shape) for o in outs]}, expected two (B, d_model, {out.shape[2]})")
        same(outs_len, out_len, "forward_layers lengths against forward's")
        depth = len(enc.blocks())
        try:
            enc.forward_layers(feats, lengths, [depth])
        except (ValueError, IndexError):
            pass
        else:
            raise AssertionError(f"forward_layers([{depth}]) on {depth} blocks did not raise ValueError")


def masking(s: Subject) -> None:
    feats, lengths = feature_batch(int(s.fields.get("feat_in", DEFAULT_CHANNELS)))
    mask = s.build()
    with s.check("shapes"):
        masked, masks = _pair(seeded(0, lambda: mask(feats, lengths)), "masked, masks")
        expect(masked.shape == feats.shape and masks.shape == feats.shape,
               f"masked {tuple(masked.shape)} and masks {tuple(masks.shape)}, expected both {tuple(feats.shape)}")
        expect(bool(((masks == 0) | (masks == 1)).all()), "masks hold values other than 0 and 1")
    with s.check("padding"):
        draws = [seeded(seed, lambda: mask(feats, lengths)) for seed in range(4)]
        inside = valid(lengths, feats.shape[2])[:, None, :]
        expect(all(not bool((m.bool() & ~inside).any()) for _, m in draws), "a frame past a length is masked")
        expect(all(torch.equal(torch.where(m.bool(), f, feats), f) for f, m in draws), "values where the mask is 0 changed")
        expect(any(bool(m.bool().any()) for _, m in draws), "nothing is masked in four draws")
    with s.check("autocast"):
        with bf16():
            cast, cast_masks = seeded(0, lambda: mask(feats, lengths))
        same(cast_masks.float(), masks.float(), "masks under bf16 autocast")
        finite(cast, "masked features under bf16 autocast")
    determinism(s, lambda m: m(feats, lengths))
    state_round_trip(s, lambda m: m(feats, lengths))


def quantizer(s: Subject) -> None:
    feats, lengths = feature_batch(int(s.fields.get("feat_in", DEFAULT_CHANNELS)))
    combine, books = int(s.fields.get("combine_time_steps", 1)), int(s.fields.get("num_books", 1))
    squeeze = bool(s.fields.get("squeeze_single", False)) and books == 1
    quant = in_mode(s.build(), True)
    with s.check("shapes"):
        tokens = quant(feats)
        shape = (BATCH, feats.shape[2] // combine) + (() if squeeze else (books,))
        expect(tuple(tokens.shape) == shape, f"tokens of shape {tuple(tokens.shape)}, expected {shape}")
        expect(tokens.dtype == torch.int64 and not tokens.requires_grad, f"tokens are {tokens.dtype}, expected int64 without gradient")
        classes = s.fields.get("num_classes")
        if classes is not None:
            expect(bool((tokens >= 0).all() and (tokens < classes).all()), f"tokens outside [0, {classes})")
    with s.check("padding"):
        groups = torch.div(lengths, combine, rounding_mode="floor")
        whole = valid(groups, tokens.shape[1]).view(BATCH, -1, *([1] * (tokens.dim() - 2)))
        same(quant(new_padding(feats, lengths)) * whole, tokens * whole, "tokens inside each length when the padding changes")
    with s.check("autocast"):
        with bf16():
            same(quant(feats), tokens, "tokens under bf16 autocast")
    determinism(s, lambda q: q(feats))
    state_round_trip(s, lambda q: q(feats))


def decoder(s: Subject) -> None:
    encoded = torch.randn(BATCH, int(s.fields.get("feat_in", 32)), 16, generator=torch.Generator().manual_seed(14))
    classes, books = s.fields.get("num_classes"), int(s.fields.get("num_decoders", 1))
    squeeze = bool(s.fields.get("squeeze_single", False)) and books == 1
    dec = in_mode(s.build(), False)
    with s.check("shapes"):
        log_probs = dec(encoded)
        expect(log_probs.dim() == (3 if squeeze else 4) and tuple(log_probs.shape[:2]) == (BATCH, 16),
               f"log-probs of shape {tuple(log_probs.shape)}, expected (B, T', C{'' if squeeze else ', H'})")
        if classes is not None:
            expect(log_probs.shape[2] == classes, f"{log_probs.shape[2]} classes, the config says num_classes={classes}")
        if not squeeze:
            expect(log_probs.shape[3] == books, f"{log_probs.shape[3]} codebooks, the config says num_decoders={books}")
        _float32(log_probs, "log-probs")
        same(log_probs.logsumexp(2), torch.zeros_like(log_probs.logsumexp(2)), "logsumexp over the classes (a log-softmax)", atol=1e-4)
    _repeatable(s, lambda: dec(encoded))
    with s.check("autocast"):
        with bf16():
            cast = dec(encoded)
        finite(cast, "log-probs under bf16 autocast")
        expect(cast.dtype in AUTOCAST_DTYPES, f"log-probs under bf16 autocast are {cast.dtype}, expected bfloat16, float16 or float32")
        expect(cast.shape == log_probs.shape, f"log-probs under bf16 autocast have shape {tuple(cast.shape)}")
    with s.check("backward"):
        trained = in_mode(s.build(), True)
        trained(encoded)[:, :, 0].sum().backward()
        grads = [p.grad for p in trained.parameters() if p.requires_grad]
        expect(all(g is not None and bool(torch.isfinite(g).all()) for g in grads), "parameters without a finite gradient")
    determinism(s, lambda d: in_mode(d, False)(encoded))
    state_round_trip(s, lambda d: in_mode(d, False)(encoded))


def _loss_inputs(s: Subject, masked: bool) -> dict[str, Tensor]:
    """masks (B, 4, T' * combine) blocks of masked frames inside each length, log-probs and tokens."""
    combine, books = int(s.fields.get("combine_time_steps", 1)), int(s.fields.get("num_decoders", 1))
    squeeze = bool(s.fields.get("squeeze_single", False)) and books == 1
    g = torch.Generator().manual_seed(15)
    steps, classes = 16, 8
    encoded_len = torch.tensor([16, 13, 10])
    frames = torch.arange(steps * combine)
    blocks = (frames // (2 * combine)) % 2 == 0  # every other pair of tokens
    time_mask = blocks[None, :] & (frames[None, :] < (encoded_len * combine)[:, None]) & masked
    log_probs = torch.log_softmax(torch.randn(BATCH, steps, classes, books, generator=g), dim=2)
    tokens = torch.randint(classes, (BATCH, steps, books), generator=g)
    if squeeze:
        log_probs, tokens = log_probs[..., 0], tokens[..., 0]
    masks = time_mask[:, None, :].expand(BATCH, 4, -1).float()
    return {"masks": masks, "log_probs": log_probs.requires_grad_(True), "tokens": tokens, "encoded_len": encoded_len}


def loss(s: Subject) -> None:
    fn = s.build()
    inputs = _loss_inputs(s, masked=True)
    with s.check("contract"):
        expect(isinstance(fn, Loss), "no aligned(masks, log_probs, tokens): subclass nestkit.MaskedTokenLoss or write it")
    with s.check("shapes"):
        value = fn(**inputs)
        expect(value.dim() == 0, f"the loss has shape {tuple(value.shape)}, expected a 0-dim tensor")
        finite(value, "the loss")
        token_mask, log_probs, tokens = fn.aligned(inputs["masks"], inputs["log_probs"], inputs["tokens"])
        n = token_mask.shape[1]
        expect(token_mask.dtype == torch.bool and tuple(token_mask.shape) == (BATCH, n) and n <= 16,
               f"aligned token_mask {tuple(token_mask.shape)} {token_mask.dtype}, expected (B, T'' <= 16) bool")
        expect(log_probs.dim() == 4 and tuple(log_probs.shape[:2]) == (BATCH, n) and tuple(tokens.shape[:2]) == (BATCH, n) and tokens.dim() == 3,
               f"aligned log_probs {tuple(log_probs.shape)} and tokens {tuple(tokens.shape)}, expected (B, T'', C, H) and (B, T'', H)")
    with s.check("backward"):
        expect(value.requires_grad, "the loss has no gradient: it is detached from log_probs (.detach(), .item(), torch.no_grad)")
    with s.check("masked tokens only"):
        grad = torch.autograd.grad(value, inputs["log_probs"])[0]
        per_token = grad.abs().flatten(2).sum(-1)  # (B, 16)
        scored = torch.zeros_like(per_token, dtype=torch.bool)
        scored[:, :n] = token_mask
        expect(not bool((per_token[~scored] > 0).any()), "the loss has a gradient at tokens that aligned() does not score")
        expect(bool((per_token[scored] > 0).any()), "the loss has no gradient at the tokens aligned() scores")
    with s.check("nothing masked"):
        finite(fn(**_loss_inputs(s, masked=False)), "the loss of a batch without masked tokens")
    with s.check("autocast"):
        with bf16():
            finite(fn(**{**inputs, "log_probs": inputs["log_probs"].detach().bfloat16()}), "the loss of bf16 log-probs")
    determinism(s, lambda f: f(**{k: v.detach() for k, v in inputs.items()}))
    state_round_trip(s, lambda f: f(**{k: v.detach() for k, v in inputs.items()}))
