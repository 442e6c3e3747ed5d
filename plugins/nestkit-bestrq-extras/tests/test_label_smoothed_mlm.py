"""label_smoothed_mlm: the built-in loss at 0, torch's label-smoothed cross entropy otherwise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nestkit

B, D, T, C, CLASSES = 3, 8, 48, 4, 10  # T frames -> 12 tokens


def _inputs(books: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(B, 1, T // C, generator=g) < 0.5).float().repeat_interleave(C, dim=2).expand(B, D, T).clone()
    logits = torch.randn(B, T // C, CLASSES, books, generator=g, requires_grad=True)
    tokens = torch.randint(CLASSES, (B, T // C, books), generator=g)
    return masks, logits, logits.log_softmax(2), tokens


def _loss(name: str, books: int, **kw: object) -> torch.nn.Module:
    return nestkit.build("loss", {"name": name, "combine_time_steps": C, "num_decoders": books, **kw})


@pytest.mark.parametrize("books", [1, 3])
def test_zero_smoothing_is_exactly_the_builtin_loss(books: int) -> None:
    masks, _, log_probs, tokens = _inputs(books)
    ours = _loss("label_smoothed_mlm", books, label_smoothing=0.0)(masks=masks, log_probs=log_probs, tokens=tokens)
    builtin = _loss("multi_mlm", books)(masks=masks, log_probs=log_probs, tokens=tokens)
    assert torch.equal(ours, builtin) and float(ours.detach()) > 0


@pytest.mark.parametrize("books", [1, 2])
def test_smoothing_matches_torch_cross_entropy_over_masked_tokens(books: int) -> None:
    masks, logits, log_probs, tokens = _inputs(books, seed=1)
    loss = _loss("label_smoothed_mlm", books, label_smoothing=0.2)(masks=masks, log_probs=log_probs, tokens=tokens)
    masked = masks[:, 0, ::C].bool()  # (B, T'): whole tokens are masked here
    per_book = [
        F.cross_entropy(logits[..., h][masked], tokens[..., h][masked], label_smoothing=0.2) for h in range(books)
    ]
    assert torch.allclose(loss, torch.stack(per_book).mean(), rtol=1e-6, atol=0)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_smoothing_penalises_an_overconfident_correct_model() -> None:
    masks, _, _, tokens = _inputs(1, seed=4)
    log_probs = (12.0 * F.one_hot(tokens, CLASSES).transpose(2, 3).float()).log_softmax(2)
    plain = _loss("label_smoothed_mlm", 1, label_smoothing=0.0)(masks=masks, log_probs=log_probs, tokens=tokens)
    smooth = _loss("label_smoothed_mlm", 1, label_smoothing=0.1)(masks=masks, log_probs=log_probs, tokens=tokens)
    assert float(plain) < 1e-4 and float(smooth) > 1.0  # 0.1 * mean(-log p) is about 0.1 * 0.9 * 12


def test_squeezed_single_book_layout() -> None:
    masks, _, log_probs, tokens = _inputs(1, seed=2)
    loss = _loss("label_smoothed_mlm", 1, label_smoothing=0.1, squeeze_single=True)
    full = loss(masks=masks, log_probs=log_probs, tokens=tokens)
    squeezed = loss(masks=masks, log_probs=log_probs[..., 0], tokens=tokens[..., 0])
    assert torch.equal(full, squeezed)


def test_no_masked_token_gives_a_finite_zero() -> None:
    masks, logits, log_probs, tokens = _inputs(2, seed=3)
    loss = _loss("label_smoothed_mlm", 2, label_smoothing=0.3)(masks=torch.zeros_like(masks), log_probs=log_probs, tokens=tokens)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_smoothing_must_be_below_one() -> None:
    with pytest.raises(nestkit.RecipeError, match="loss.label_smoothing: input should be less than 1"):
        _loss("label_smoothed_mlm", 1, label_smoothing=1.0)
