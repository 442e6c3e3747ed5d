"""Property tests of the NEST components: masking, quantizer, encoder padding, loss, config checks."""

from __future__ import annotations

import pytest
import torch

import nestkit
from nestkit.errors import RecipeError

BLOCK = 10


def masking(allow_overlap: bool, mask_prob: float, **extra: object) -> torch.nn.Module:
    return nestkit.build("masking", {"name": "random_block", "feat_in": 4, "block_size": BLOCK,
                                     "mask_prob": mask_prob, "allow_overlap": allow_overlap, "freeze": True, **extra})


def test_overlap_masking_fraction_matches_expectation() -> None:
    torch.manual_seed(0)
    lengths = torch.full((400,), 500)
    _, masks = masking(True, 0.02)(torch.zeros(400, 4, 500), lengths)
    # Each of the L - block + 1 start positions opens a block w.p. p; frame t (block <= t < L - block)
    # stays unmasked only if none of the `block` starts before it fires: 1 - (1 - p)^block.
    expected = 1 - (1 - 0.02) ** BLOCK
    middle = masks[:, 0, BLOCK : 500 - BLOCK].mean().item()
    assert abs(middle - expected) < 0.01


def test_non_overlap_masking_fraction_is_mask_prob() -> None:
    torch.manual_seed(0)
    lengths = torch.tensor([500, 333, 120, 64] * 50)
    _, masks = masking(False, 0.2)(torch.zeros(200, 4, 500), lengths)
    per_utt = masks[:, 0].sum(1)
    n_blocks = torch.ceil(lengths * 0.2 / BLOCK)
    # Utterances long enough for full-size blocks get exactly ceil(L p / block) blocks.
    assert torch.equal(per_utt[lengths == 500], n_blocks[lengths == 500] * BLOCK)
    assert torch.equal(per_utt[lengths == 333], n_blocks[lengths == 333] * BLOCK)
    assert (per_utt[lengths == 64] > 0).all()


def test_overlap_frame_marginals_follow_nemo_start_rule() -> None:
    """NeMo 3.0.0 with overlap: a block may start at every t with t + block <= L (so it may end
    exactly at the last frame), each with probability p. Frame t is then masked with probability
    1 - (1 - p)^k(t), k(t) = the valid starts in [t - block + 1, t]; frames >= L never."""
    torch.manual_seed(3)
    n, length, width, p = 4000, 30, 40, 0.1
    time_mask = masking(True, p).draw(torch.full((n,), length), width)
    t = torch.arange(width)
    last_start = length - BLOCK
    k = (torch.minimum(t, torch.tensor(last_start)) - (t - BLOCK + 1).clamp_min(0) + 1).clamp_min(0)
    expected = 1 - (1 - p) ** k.double()
    observed = time_mask.double().mean(0)
    assert not time_mask[:, length:].any()
    assert abs(observed[length - 1] - p) < 0.02  # only the last valid start covers the last frame
    torch.testing.assert_close(observed, expected, atol=0.03, rtol=0)


@pytest.mark.parametrize("allow_overlap", [True, False])
def test_utterance_of_exactly_one_block_can_be_masked(allow_overlap: bool) -> None:
    torch.manual_seed(4)
    lengths = torch.tensor([BLOCK] * 200 + [BLOCK - 1] * 200)
    time_mask = masking(allow_overlap, 0.5).draw(lengths, BLOCK + 2)
    masked_share = time_mask[:200].any(1).float().mean().item()
    assert not time_mask[:, BLOCK:].any()
    if allow_overlap:  # the one valid start is 0, taken w.p. 0.5: all or nothing; shorter: never
        assert abs(masked_share - 0.5) < 0.1
        assert torch.equal(time_mask[:200, :BLOCK].all(1), time_mask[:200].any(1))
        assert not time_mask[200:].any()
    else:  # one block shrunk to BLOCK // 2 frames, always drawn
        assert masked_share == 1.0 and torch.equal(time_mask[:200].sum(1), torch.full((200,), BLOCK // 2))


def _grid_starts(time_mask: torch.Tensor, block: int) -> torch.Tensor:
    """Block starts of non-overlapping masks (N, T) whose blocks lie on one grid per row: the
    first masked frame fixes the offset; every masked frame must belong to a whole grid block."""
    t = torch.arange(time_mask.shape[1])
    offset = time_mask.int().argmax(1, keepdim=True) % block
    is_start = time_mask & ((t - offset) % block == 0) & (t >= offset)
    count = torch.cumsum(is_start.int(), 1)
    covered = (count - torch.nn.functional.pad(count, (block, 0))[:, : time_mask.shape[1]]) > 0
    assert torch.equal(covered, time_mask)
    assert torch.equal(time_mask.sum(1), is_start.sum(1) * block)
    return is_start


@pytest.mark.parametrize(
    ("length", "mask_prob", "block", "blocks"),
    [(100, 0.2, BLOCK, 2), (30, 0.3, 15, 1), (BLOCK, 0.5, BLOCK // 2, 1)],  # full, shrunk to 15, shrunk to 5
)
def test_non_overlap_starts_cover_nemo_range_and_nothing_beyond(length: int, mask_prob: float, block: int, blocks: int) -> None:
    """NeMo 3.0.0 without overlap: starts slot * b + offset, slot < L // b - 1, offset in [0, b):
    exactly 0 .. (L // b - 1) * b - 1 over many draws (the offset never exceeds the shrunk block)."""
    torch.manual_seed(5)
    module = nestkit.build("masking", {"name": "random_block", "feat_in": 4, "block_size": 16 if length == 30 else BLOCK,
                                       "mask_prob": mask_prob, "allow_overlap": False, "freeze": True})
    time_mask = module.draw(torch.full((3000,), length), length + 8)
    is_start = _grid_starts(time_mask, block)
    assert torch.equal(is_start.sum(1), torch.full((3000,), blocks))
    seen = is_start.any(0).nonzero().flatten()
    assert torch.equal(seen, torch.arange((length // block - 1) * block))


@pytest.mark.parametrize("allow_overlap", [True, False])
def test_masking_never_past_length_and_uses_embedding(allow_overlap: bool) -> None:
    torch.manual_seed(1)
    lengths = torch.randint(1, 300, (64,))
    feats = torch.randn(64, 4, 300)
    module = masking(allow_overlap, 0.3)
    masked, masks = module(feats, lengths)
    beyond = torch.arange(300)[None, :] >= lengths[:, None]
    assert not masks[:, 0][beyond].any()
    assert masks.sum() > 0
    assert torch.equal((masks == 1).all(1), (masks == 1).any(1))  # whole frames
    emb = module.mask_embedding[None, :, None].expand_as(feats)
    assert torch.equal(masked[masks.bool()], emb[masks.bool()])
    assert torch.equal(masked[~masks.bool()], feats[~masks.bool()])


@pytest.mark.parametrize("allow_overlap", [True, False])
def test_masking_reproducible_under_seed(allow_overlap: bool) -> None:
    module = masking(allow_overlap, 0.1)
    feats, lengths = torch.zeros(8, 4, 200), torch.tensor([200, 150, 90, 60, 200, 30, 120, 180])
    torch.manual_seed(7)
    first = module(feats, lengths)[1]
    torch.manual_seed(7)
    again = module(feats, lengths)[1]
    other = module(feats, lengths)[1]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_max_mask_ratio_caps_blocks() -> None:
    torch.manual_seed(0)
    lengths = torch.full((50,), 400)
    _, masks = masking(True, 0.2, max_mask_ratio=0.1)(torch.zeros(50, 4, 400), lengths)
    assert (masks[:, 0].sum(1) <= 0.1 * 400).all()


def quantizer(dist_fn: str, books: int = 1) -> torch.nn.Module:
    return nestkit.build("quantizer", {"name": "random_projection", "feat_in": 20, "code_dim": 8, "num_classes": 300,
                                       "num_books": books, "dist_fn": dist_fn, "combine_time_steps": 4})


@pytest.mark.parametrize("books", [1, 3])
def test_quantizer_l2_and_cosine_give_nemo_l2_tokens(books: int) -> None:
    torch.manual_seed(0)
    l2, cos = quantizer("l2", books), quantizer("cosine", books)
    cos.load_state_dict(l2.state_dict())
    feats = torch.randn(5, 20, 64)
    tokens = l2(feats)
    assert tokens.shape == (5, 16, books) and tokens.dtype == torch.int64
    assert torch.equal(tokens, cos(feats))
    # Brute-force L2 nearest codebook vector in float64, the way NeMo defines it.
    x = feats.transpose(1, 2).reshape(5, 16, 80) @ l2.proj.weight.T.double().float()
    x = torch.nn.functional.normalize(x.view(5, 16, books, 8).double(), dim=-1)
    dist = (x[..., None, :] - l2.codebooks[None, None]).norm(dim=-1)  # (B, T, books, classes)
    assert torch.equal(tokens, dist.argmin(-1))


def test_quantizer_is_frozen_and_float32_under_autocast() -> None:
    q = quantizer("l2")
    assert not any(p.requires_grad for p in q.parameters())
    feats = torch.randn(2, 20, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = q(feats.bfloat16())
    assert torch.equal(tokens, q(feats.bfloat16().float()))


def small_encoder() -> torch.nn.Module:
    return nestkit.build("encoder", {"name": "fast_conformer", "feat_in": 16, "n_layers": 2, "d_model": 32, "n_heads": 4,
                                     "conv_kernel_size": 5, "subsampling_conv_channels": 8, "subsampling_factor": 4})


def test_extra_padding_does_not_change_valid_outputs() -> None:
    torch.manual_seed(0)
    enc = small_encoder().eval()
    lengths = torch.tensor([64, 37, 50])
    feats = torch.randn(3, 16, 64) * (torch.arange(64)[None, None, :] < lengths[:, None, None])
    with torch.no_grad():
        out, out_len = enc(feats, lengths)
        # Longer padding filled with garbage: valid frames must not move.
        padded = torch.cat([feats, torch.randn(3, 16, 40) * 5], dim=2)
        out2, out_len2 = enc(padded, lengths)
    assert torch.equal(out_len, out_len2) and out_len.tolist() == [16, 10, 13]
    for b, n in enumerate(out_len.tolist()):
        torch.testing.assert_close(out2[b, :, :n], out[b, :, :n], atol=1e-5, rtol=1e-5)


def test_forward_layers_and_stochastic_depth() -> None:
    enc = small_encoder().eval()
    feats, lengths = torch.randn(2, 16, 32), torch.tensor([32, 20])
    with torch.no_grad():
        final, _ = enc(feats, lengths)
        layers, lens = enc.forward_layers(feats, lengths, [0, -1])
    assert len(layers) == 2 and torch.equal(layers[1], final) and not torch.equal(layers[0], final)
    depth = len(enc.layers)
    with pytest.raises(ValueError, match=f"the encoder has {depth} blocks"):  # never wrapped round to another block
        enc.forward_layers(feats, lengths, [depth])
    sd = nestkit.build("encoder", {"name": "fast_conformer", "feat_in": 16, "n_layers": 4, "d_model": 32, "n_heads": 4,
                                   "stochastic_depth_drop_prob": 0.5, "stochastic_depth_mode": "linear"})
    assert sd.drop_probs == [0.0, 0.5 / 3, 1.0 / 3, 0.5]


def test_loss_zero_without_masked_tokens_and_matches_manual_nll() -> None:
    loss = nestkit.build("loss", {"name": "multi_mlm", "combine_time_steps": 2, "num_decoders": 2})
    log_probs = torch.log_softmax(torch.randn(2, 5, 7, 2, requires_grad=True), dim=2)
    tokens = torch.randint(0, 7, (2, 5, 2))
    none = loss(masks=torch.zeros(2, 3, 10), log_probs=log_probs, tokens=tokens)
    assert torch.isfinite(none) and none.item() == 0.0
    none.backward(retain_graph=True)  # finite gradient path
    masks = torch.zeros(2, 3, 10)
    masks[0, :, 2:4] = 1  # token 1 of utterance 0
    masks[1, :, 8:10] = 1  # token 4 of utterance 1
    masks[1, :, 5] = 1  # half of token 2: below the 0.8 threshold
    value = loss(masks=masks, log_probs=log_probs, tokens=tokens)
    picked = [log_probs[0, 1, tokens[0, 1, h], h] + log_probs[1, 4, tokens[1, 4, h], h] for h in range(2)]
    torch.testing.assert_close(value, -(picked[0] + picked[1]) / 4)


def nest_section(**encoder: object) -> dict:
    return {
        "name": "nest", "num_classes": 32, "code_dim": 8,
        "preprocessor": {"name": "mel_spectrogram", "features": 16, "window_size": 0.025, "n_fft": 512},
        "masking": {"name": "random_block", "feat_in": 16, "block_size": 16, "mask_prob": 0.05, "allow_overlap": True, "freeze": True},
        "quantizer": {"name": "random_projection", "feat_in": 16, "code_dim": 8, "num_classes": 32, "combine_time_steps": 8},
        "encoder": {"name": "fast_conformer", "feat_in": 16, "n_layers": 1, "d_model": 32, "n_heads": 4, **encoder},
        "decoder": {"name": "multi_softmax", "feat_in": 32, "num_classes": 32},
        "loss": {"name": "multi_mlm", "combine_time_steps": 8},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"encoder": {"n_heads": 5}}, "n_heads (5) must divide d_model (32)"),
        ({"quantizer": {"combine_time_steps": 4}}, "quantizer.combine_time_steps (4) must equal encoder.subsampling_factor (8)"),
        ({"encoder": {"feat_in": 80}}, "encoder.feat_in (80) must equal preprocessor.features (16)"),
        ({"decoder": {"num_classes": 64}}, "decoder.num_classes (64) must equal num_classes (32)"),
        ({"decoder": {"feat_in": 64}}, "decoder.feat_in (64) must equal the encoder output size (32)"),
        ({"encoder": {"subsampling": "striding"}}, "expected 'dw_striding'"),
    ],
)
def test_cross_field_checks_are_one_line_errors(change: dict, message: str) -> None:
    section = nest_section()
    for key, values in change.items():
        section[key] = {**section[key], **values}
    with pytest.raises(RecipeError) as err:
        nestkit.build("model", section)
    assert message in str(err.value) and "\n" not in str(err.value)
