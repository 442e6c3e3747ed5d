"""Target-health warnings: one line that names the problem and what to try, each warned once.

Torch-free: the recipe's ``trainer.target_health`` section is this module's config.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class TargetHealthConfig(BaseModel):
    """``trainer.target_health``: when to warn about collapsed targets or a missing context gain."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="warn about collapsed targets and a missing context gain (false: never)")
    collapse_perplexity_fraction: float = Field(
        0.05, gt=0, le=1, description="targets collapsed when their perplexity is under this share of num_classes"
    )
    collapse_top1_share: float = Field(
        0.5, gt=0, le=1, description="targets collapsed when one token takes more than this share of the frames"
    )
    min_context_gain: float = Field(
        0.05, description="nats: a validation context gain (unigram loss - masked loss) below this counts as none"
    )
    patience: int = Field(3, ge=1, description="validations in a row without context gain before warning")


class TargetHealthChecker:
    """Feed it every metrics dict (log intervals and validations); it returns new warnings."""

    def __init__(self, config: TargetHealthConfig, num_classes: int, num_books: int = 1) -> None:
        self.config, self.num_classes, self.num_books = config, num_classes, num_books
        self._warned: set[str] = set()
        self._validations_without_gain = 0

    def check(self, metrics: Mapping[str, float]) -> list[str]:
        """New one-line warnings for ``metrics`` (TargetStatistics' names, ``val_`` for validation)."""
        if not self.config.enabled:
            return []
        found = [self._collapse(metrics, book) for book in self._books()]
        found.append(self._no_context_gain(metrics))
        new = [(key, text) for key, text in (f for f in found if f) if key not in self._warned]
        self._warned.update(key for key, _ in new)
        return [text for _, text in new]

    def _books(self) -> list[str]:
        return [""] if self.num_books == 1 else [f"/book{h}" for h in range(self.num_books)]

    def _collapse(self, metrics: Mapping[str, float], book: str) -> tuple[str, str] | None:
        perplexity = metrics.get(f"target_perplexity{book}")
        top1 = metrics.get(f"target_top1_share{book}")
        if perplexity is None or top1 is None:
            return None
        floor = self.config.collapse_perplexity_fraction * self.num_classes
        if perplexity >= floor and top1 <= self.config.collapse_top1_share:
            return None
        where = f" in codebook {book.removeprefix('/book')}" if book else ""
        return f"collapse{book}", (
            f"warning: target tokens collapsed{where}: perplexity {perplexity:.1f} of {self.num_classes} classes, "
            f"the most frequent token is {top1:.0%} of frames (usually silence or padding dominating the features); "
            "trim long silences, check the audio level and feature normalization (model.preprocessor.normalize), "
            "or lower model.num_classes"
        )

    def _no_context_gain(self, metrics: Mapping[str, float]) -> tuple[str, str] | None:
        gain = metrics.get("val_context_gain")
        if gain is None:
            return None
        self._validations_without_gain = self._validations_without_gain + 1 if gain < self.config.min_context_gain else 0
        if self._validations_without_gain < self.config.patience:
            return None
        return "no_context_gain", (
            f"warning: no context gain after {self._validations_without_gain} validations (val_context_gain "
            f"{gain:.3f} nats < {self.config.min_context_gain:g}): the model has only learned the token frequencies; "
            "train longer, mask larger blocks (model.masking.block_size) or less often (model.masking.mask_prob), "
            "try another learning rate (model.optim.lr), a larger encoder, or more data"
        )
