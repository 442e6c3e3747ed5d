"""Target statistics against values computed by hand on small fixed token tensors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nestkit.bench import host_syncs
from nestkit.health.target_stats import TargetStatistics

HIT, MISS = 0.86, 0.02  # the model's probability of its prediction / of every other class (C = 8)


def model_log_probs(predicted: list[list[int]], classes: int = 8) -> torch.Tensor:
    """(B, T, C) log-probabilities putting HIT on ``predicted`` and MISS elsewhere."""
    probs = torch.full((len(predicted), len(predicted[0]), classes), MISS)
    probs.scatter_(2, torch.tensor(predicted)[:, :, None], HIT)
    assert torch.allclose(probs.sum(-1), torch.ones(()))
    return probs.log()


def read(stats: TargetStatistics) -> dict[str, float]:
    window = stats.window_tensor()
    metrics = stats.summarize(window.tolist())
    stats.reset_window(window)
    return metrics


# Batch 1: two utterances; the second has two padded positions (token 9 is out of range on purpose,
# and one padded position is even marked as masked: neither may count).
TOKENS_1 = torch.tensor([[0, 0, 1, 2], [3, 0, 9, 9]])
MASK_1 = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0]], dtype=torch.bool)
VALID_1 = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
PRED_1 = [[0, 1, 1, 2], [3, 5, 0, 0]]  # masked: (0 -> 0 hit), (1 -> 1 hit), (0 -> 5 miss)
# Batch 2: one utterance, all valid; masked targets 0, 4, 0.
TOKENS_2 = torch.tensor([[0, 4, 1, 0]])
MASK_2 = torch.tensor([[1, 1, 0, 1]], dtype=torch.bool)
VALID_2 = torch.ones(1, 4, dtype=torch.bool)
PRED_2 = [[0, 4, 1, 2]]  # masked: hit, hit, miss


def update(stats: TargetStatistics, batch: int) -> None:
    if batch == 1:
        stats.update(TOKENS_1, model_log_probs([[p if p < 8 else 0 for p in row] for row in PRED_1]), MASK_1, VALID_1)
    else:
        stats.update(TOKENS_2, model_log_probs(PRED_2), MASK_2, VALID_2)


def test_one_codebook_by_hand() -> None:
    stats = TargetStatistics(num_classes=8, num_books=1)
    update(stats, 1)
    first = read(stats)
    # valid targets 0,0,1,2,3,0: frequencies 1/2, 1/6, 1/6, 1/6 -> entropy ln(12)/2
    assert first["target_perplexity"] == pytest.approx(math.sqrt(12))
    assert first["target_top1_share"] == pytest.approx(0.5)
    assert first["target_classes_used"] == pytest.approx(4 / 8)
    # the prior before the first batch is empty: add-one smoothing gives the uniform baseline
    assert first["unigram_loss"] == pytest.approx(math.log(8))
    nll = (2 * -math.log(HIT) - math.log(MISS)) / 3
    assert first["masked_nll"] == pytest.approx(nll)
    assert first["context_gain"] == pytest.approx(math.log(8) - nll)
    assert first["masked_accuracy"] == pytest.approx(2 / 3)
    assert first["majority_accuracy"] == pytest.approx(2 / 3)  # empty prior: majority is token 0

    update(stats, 2)
    second = read(stats)
    # the window holds only batch 2: 0,4,1,0 -> frequencies 1/2, 1/4, 1/4
    assert second["target_perplexity"] == pytest.approx(2 ** 1.5)
    assert second["target_top1_share"] == pytest.approx(0.5)
    assert second["target_classes_used"] == pytest.approx(5 / 8)  # 0..3 before, now 4 too
    # prior counts [3, 1, 1, 1, 0, 0, 0, 0] (6 targets): p = (n + 1) / (6 + 8)
    unigram = -(2 * math.log(4 / 14) + math.log(1 / 14)) / 3
    assert second["unigram_loss"] == pytest.approx(unigram)
    assert second["context_gain"] == pytest.approx(unigram - nll)
    assert second["majority_accuracy"] == pytest.approx(2 / 3)  # majority 0: targets 0, 4, 0
    assert second["masked_accuracy"] == pytest.approx(2 / 3)
    assert stats.prior.tolist() == [[5, 2, 1, 1, 1, 0, 0, 0]]


def test_several_codebooks_reported_per_book_and_averaged() -> None:
    stats = TargetStatistics(num_classes=4, num_books=2)
    tokens = torch.tensor([[[0, 2], [1, 2], [2, 2]]])  # (B, T, H): book 0 all different, book 1 always 2
    log_probs = torch.full((1, 3, 4, 2), 0.25).log()
    stats.update(tokens, log_probs, torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool))
    first = read(stats)
    assert first["target_perplexity/book0"] == pytest.approx(3.0)
    assert first["target_perplexity/book1"] == pytest.approx(1.0)
    assert first["target_perplexity"] == pytest.approx(2.0)  # untagged: mean over books
    assert first["target_top1_share/book0"] == pytest.approx(1 / 3)
    assert first["target_top1_share/book1"] == pytest.approx(1.0)
    assert first["target_classes_used/book0"] == pytest.approx(0.75)
    assert first["target_classes_used/book1"] == pytest.approx(0.25)
    assert first["unigram_loss/book0"] == first["unigram_loss/book1"] == pytest.approx(math.log(4))
    assert first["masked_nll"] == pytest.approx(math.log(4))
    # priors per book: [1, 1, 1, 0] and [0, 0, 3, 0]
    stats.update(torch.tensor([[[3, 2]]]), torch.full((1, 1, 4, 2), 0.25).log(),
                 torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 1, dtype=torch.bool))
    second = read(stats)
    assert second["unigram_loss/book0"] == pytest.approx(math.log(7))  # (0 + 1) / (3 + 4)
    assert second["unigram_loss/book1"] == pytest.approx(-math.log(4 / 7))  # (3 + 1) / (3 + 4)
    assert second["context_gain/book1"] == pytest.approx(-math.log(4 / 7) - math.log(4))
    assert second["majority_accuracy/book0"] == 0.0 and second["majority_accuracy/book1"] == 1.0
    assert second["majority_accuracy"] == pytest.approx(0.5)


def test_validation_scores_against_the_training_prior_without_changing_it() -> None:
    stats = TargetStatistics(num_classes=8)
    update(stats, 1)
    read(stats)
    prior = stats.prior.clone()
    val = stats.validation()
    update(val, 2)
    metrics = read(val)
    assert torch.equal(stats.prior, prior)
    assert metrics["val_unigram_loss"] == pytest.approx(-(2 * math.log(4 / 14) + math.log(1 / 14)) / 3)
    assert metrics["val_majority_accuracy"] == pytest.approx(2 / 3)
    assert metrics["val_context_gain"] == pytest.approx(metrics["val_unigram_loss"] - metrics["val_masked_nll"])
    assert metrics["val_target_perplexity"] == pytest.approx(2 ** 1.5)
    assert "val_target_classes_used" not in metrics and not any(k.startswith("unigram") for k in metrics)
    # the training window was not touched either, and later training counts are seen by validation
    assert not stats.window_tensor().any()
    update(stats, 2)
    read(stats)
    update(val, 1)
    assert read(val)["val_unigram_loss"] < math.log(8)  # the prior now favours token 0


def test_state_dict_round_trip_continues_exactly() -> None:
    stats = TargetStatistics(num_classes=8)
    update(stats, 1)
    read(stats)
    resumed = TargetStatistics(num_classes=8)
    resumed.load_state_dict(stats.state_dict())
    update(stats, 2)
    update(resumed, 2)
    assert torch.equal(stats.window_tensor(), resumed.window_tensor())
    assert read(stats) == read(resumed)  # classes used included: the loaded prior counts as seen
    with pytest.raises(ValueError, match="do not fit"):
        TargetStatistics(num_classes=4).load_state_dict(stats.state_dict())


def test_ranks_share_one_prior_after_a_reduced_read() -> None:
    """DDP: each rank folds the all-reduced window into its prior, as one process seeing both batches."""
    rank0, rank1, single = TargetStatistics(8), TargetStatistics(8), TargetStatistics(8)
    update(rank0, 1)
    update(rank1, 2)
    update(single, 1)
    update(single, 2)
    reduced = rank0.window_tensor() + rank1.window_tensor()
    merged = rank0.summarize(reduced.tolist())
    rank0.reset_window(reduced)
    rank1.reset_window(reduced)
    single_window = single.window_tensor()
    assert merged["target_perplexity"] == pytest.approx(single.summarize(single_window.tolist())["target_perplexity"])
    single.reset_window(single_window)
    assert torch.equal(rank0.prior, single.prior) and torch.equal(rank1.prior, single.prior)


def test_squeezed_layouts_and_longer_outputs_are_cut_to_the_scored_length() -> None:
    stats = TargetStatistics(num_classes=8)
    tokens = torch.cat([TOKENS_2, torch.tensor([[7]])], dim=1)  # one position more than the masks
    log_probs = torch.cat([model_log_probs(PRED_2), model_log_probs([[7]])], dim=1)
    stats.update(tokens, log_probs, MASK_2, VALID_2)
    reference = TargetStatistics(num_classes=8)
    update(reference, 2)
    assert torch.equal(stats.window_tensor(), reference.window_tensor())


def test_update_and_read_never_wait_on_the_device() -> None:
    stats = TargetStatistics(num_classes=8)
    val = stats.validation()
    log_probs = model_log_probs([[p if p < 8 else 0 for p in row] for row in PRED_1])

    def step() -> None:
        stats.update(TOKENS_1, log_probs, MASK_1, VALID_1)
        val.update(TOKENS_1, log_probs, MASK_1, VALID_1)
        stats.reset_window(stats.window_tensor())

    assert host_syncs(step, torch.device("cpu")) == []


def test_nest_output_feeds_the_statistics_without_host_syncs() -> None:
    """The model's token_mask / token_valid: what its loss scores, inside each utterance."""
    import nestkit
    from _train_recipe import tiny_recipe

    section = tiny_recipe(Path("."))["model"]
    section = {"name": "nest", **{k: v for k, v in section.items() if k not in ("train_ds", "validation_ds", "optim")}}
    section["masking"]["mask_prob"] = 0.1
    model = nestkit.build("model", section).train()
    torch.manual_seed(0)
    lengths = torch.tensor([16000, 9000])
    audio = torch.randn(2, 16000) * 0.1 * (torch.arange(16000)[None, :] < lengths[:, None])
    out = model(audio, lengths)
    assert out.token_valid.sum(1).tolist() == out.encoded_len.tolist()
    assert out.token_mask.any() and not (out.token_mask & ~out.token_valid).any()
    stats = TargetStatistics(num_classes=32)
    assert host_syncs(lambda: stats.update(out.tokens, out.log_probs, out.token_mask, out.token_valid),
                      torch.device("cpu")) == []
    metrics = stats.summarize(stats.window_tensor().tolist())
    # one codebook: the token-weighted masked NLL over one batch is the loss itself
    assert metrics["masked_nll"] == pytest.approx(out.loss.item(), rel=1e-5)
    assert metrics["masked_accuracy"] == pytest.approx(out.masked_accuracy.item(), rel=1e-6)
