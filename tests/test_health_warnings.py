"""Target-health warnings: each fires once on metrics built to trigger it, none on healthy runs."""

from __future__ import annotations

import pytest
import torch

import nestkit
from conftest import RECIPES
from nestkit.health.target_stats import TargetStatistics
from nestkit.health.warnings import TargetHealthChecker, TargetHealthConfig


def healthy_log(step: int) -> dict[str, float]:
    return {"train_loss": 4.0 - step * 0.01, "target_perplexity": 40.0, "target_top1_share": 0.08,
            "target_classes_used": 0.9, "unigram_loss": 3.9, "context_gain": 0.1 * step}


def run(checker: TargetHealthChecker, sequence: list[dict[str, float]]) -> list[list[str]]:
    return [checker.check(metrics) for metrics in sequence]


def test_a_healthy_run_stays_quiet() -> None:
    checker = TargetHealthChecker(TargetHealthConfig(), num_classes=64)
    sequence = []
    for step in range(10):
        sequence.append(healthy_log(step))
        sequence.append({"val_loss": 3.5, "val_unigram_loss": 3.9, "val_context_gain": [0.0, 0.02, 0.1, 0.3][min(step, 3)]})
    assert run(checker, sequence) == [[]] * 20


def test_low_perplexity_warns_once_naming_the_cause() -> None:
    checker = TargetHealthChecker(TargetHealthConfig(), num_classes=64)
    collapsed = {**healthy_log(1), "target_perplexity": 2.5}  # under 5% of 64 = 3.2
    warnings = run(checker, [healthy_log(0), collapsed, collapsed, healthy_log(2), collapsed])
    assert [len(w) for w in warnings] == [0, 1, 0, 0, 0]
    line = warnings[1][0]
    assert line.startswith("warning: target tokens collapsed: perplexity 2.5 of 64 classes")
    assert "silence or padding" in line and "model.num_classes" in line and "\n" not in line


def test_one_dominant_token_warns() -> None:
    checker = TargetHealthChecker(TargetHealthConfig(collapse_top1_share=0.6), num_classes=64)
    assert run(checker, [{**healthy_log(1), "target_top1_share": 0.55}]) == [[]]
    (line,) = checker.check({**healthy_log(1), "target_top1_share": 0.7})
    assert "the most frequent token is 70% of frames" in line


def test_each_codebook_warns_on_its_own() -> None:
    checker = TargetHealthChecker(TargetHealthConfig(), num_classes=64, num_books=2)
    book1_bad = {"target_perplexity/book0": 30.0, "target_top1_share/book0": 0.1,
                 "target_perplexity/book1": 1.2, "target_top1_share/book1": 0.9}
    both_bad = {**book1_bad, "target_perplexity/book0": 1.0}
    warnings = run(checker, [book1_bad, book1_bad, both_bad])
    assert [len(w) for w in warnings] == [1, 0, 1]
    assert "collapsed in codebook 1:" in warnings[0][0] and "collapsed in codebook 0:" in warnings[2][0]


def test_no_context_gain_after_patience_validations() -> None:
    checker = TargetHealthChecker(TargetHealthConfig(min_context_gain=0.05, patience=3), num_classes=64)
    gains = [0.0, 0.01, 0.2, 0.01, 0.02, 0.03, 0.04, 0.0]  # the 0.2 restarts the count
    warnings = run(checker, [{"val_context_gain": g} for g in gains])
    assert [len(w) for w in warnings] == [0, 0, 0, 0, 0, 1, 0, 0]
    line = warnings[5][0]
    assert line.startswith("warning: no context gain after 3 validations (val_context_gain 0.030 nats < 0.05)")
    assert "only learned the token frequencies" in line
    for fix in ("train longer", "model.masking.block_size", "model.masking.mask_prob", "model.optim.lr", "more data"):
        assert fix in line
    # training-interval gains do not count as validations
    quiet = TargetHealthChecker(TargetHealthConfig(patience=1), num_classes=64)
    assert quiet.check({"context_gain": 0.0}) == []


def test_the_off_switch() -> None:
    checker = TargetHealthChecker(TargetHealthConfig(enabled=False, patience=1), num_classes=64)
    assert run(checker, [{"target_perplexity": 1.0, "target_top1_share": 1.0}, {"val_context_gain": -1.0}]) == [[], []]


def test_statistics_of_collapsed_targets_trigger_the_warning() -> None:
    """End to end from tokens: silence-like targets (one token) warn, varied targets do not."""
    def warnings_for(tokens: torch.Tensor) -> list[str]:
        stats = TargetStatistics(num_classes=64)
        mask = torch.zeros(tokens.shape, dtype=torch.bool)
        stats.update(tokens, torch.full((*tokens.shape, 64), 1 / 64).log(), mask, torch.ones(tokens.shape, dtype=torch.bool))
        return TargetHealthChecker(TargetHealthConfig(), num_classes=64).check(stats.summarize(stats.window_tensor().tolist()))

    generator = torch.Generator().manual_seed(0)
    assert warnings_for(torch.randint(0, 64, (4, 50), generator=generator)) == []
    silence = torch.where(torch.rand(4, 50, generator=generator) < 0.8, 7, torch.randint(0, 64, (4, 50), generator=generator))
    (line,) = warnings_for(silence)
    assert "target tokens collapsed" in line


def test_recipe_section() -> None:
    recipe = nestkit.load_recipe(RECIPES / "nest_demo.yaml", ["trainer.target_health.enabled=false",
                                                               "trainer.target_health.patience=5"])
    assert recipe.trainer.target_health == TargetHealthConfig(enabled=False, patience=5)
    with pytest.raises(nestkit.RecipeError, match="trainer.target_health.patience"):
        nestkit.load_recipe(RECIPES / "nest_demo.yaml", ["trainer.target_health.patience=0"])
