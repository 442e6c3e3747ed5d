"""Target statistics: is the model learning from context, or only the token frequencies?

Fed by any model's output, whatever plugin built it. The contract (``NestOutput`` has these
fields; a plugin model's output must carry the same):

- ``tokens`` (B, T'[, H]) integer targets, ``H`` codebooks;
- ``log_probs`` (B, T', C[, H]) the model's log-probabilities over ``C`` classes;
- ``token_mask`` (B, T') bool: the positions the masked loss scores;
- ``token_valid`` (B, T') bool: the positions inside the utterance (not padding).

``tokens`` and ``log_probs`` may be longer than T' (only the first T' positions are read).

Per codebook it accumulates on the device, without a host sync: the histogram of the window's
valid targets; the running *prior*, the counts of all training targets seen so far; and over
masked positions the unigram cross-entropy under the add-one smoothed prior as it was *before*
the batch (so the baseline never sees the token it scores), the model's NLL, the majority-token
(argmax of the prior) hits and the top-1 hits. ``window_tensor()`` is one flat float64 tensor of
sums: the trainer concatenates it into its one read per log interval and, in DDP, all-reduces it
with a sum; ``summarize`` turns the read values into flat metrics. With ``num_books`` > 1 every
metric is reported per codebook with a ``/bookN`` suffix and, untagged, as the mean over books.

In DDP ``reset_window(reduced)`` replaces this rank's window counts in the prior by all ranks'
counts, so every rank holds the same prior after each read (and a resumed run continues exactly).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

_SUMS = ("unigram_nll", "model_nll", "top1_hits", "majority_hits")  # per book, over masked positions


class TargetStatistics:
    """Device-side accumulators of target health for ``num_books`` codebooks of ``num_classes``.

    ``prior`` (internal): pass a training instance's prior to score against it without changing
    it; :meth:`validation` does that.
    """

    def __init__(
        self, num_classes: int, num_books: int = 1, device: torch.device | str = "cpu", *,
        prior: Tensor | None = None, prefix: str = "",
    ) -> None:
        self.num_classes, self.num_books = int(num_classes), int(num_books)
        self.device = torch.device(device)
        self.prefix = prefix
        self.learns_prior = prior is None
        shape = (self.num_books, self.num_classes)
        self.prior = torch.zeros(shape, dtype=torch.float64, device=self.device) if prior is None else prior
        self._sums = torch.zeros(1 + len(_SUMS) * self.num_books, dtype=torch.float64, device=self.device)
        self._hist = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self._offsets = torch.arange(self.num_books, device=self.device) * self.num_classes  # (H,)
        self._used = np.zeros(shape, dtype=bool)  # host mirror of prior > 0, kept by summarize

    @property
    def size(self) -> int:
        """Length of :meth:`window_tensor`: masked count, 4 sums per book, the histogram."""
        return self._sums.numel() + self._hist.numel()

    def validation(self) -> TargetStatistics:
        """An accumulator scored against this (training) prior, never changing it; metrics ``val_*``."""
        return TargetStatistics(self.num_classes, self.num_books, self.device, prior=self.prior, prefix="val_")

    @torch.no_grad()
    def update(self, tokens: Tensor, log_probs: Tensor, token_mask: Tensor, token_valid: Tensor) -> None:
        """Add one batch (layouts in the module docstring). Never waits on the device."""
        t = token_mask.shape[1]
        if tokens.dim() == 2:
            tokens = tokens.unsqueeze(-1)
        if log_probs.dim() == 3:
            log_probs = log_probs.unsqueeze(-1)
        valid = token_valid[:, :t, None]
        tokens = torch.where(valid, tokens[:, :t].long(), 0)  # padding may hold anything: index 0, weight 0
        log_probs = log_probs[:, :t]
        scored = (token_mask[:, :t, None] & valid).to(torch.float64)  # (B, T', 1)
        flat = tokens + self._offsets  # (B, T', H): index into the flattened (H, C) counts

        counts = self.prior  # before this batch
        log_prior = torch.log((counts + 1.0) / (counts.sum(-1, keepdim=True) + self.num_classes))
        unigram_nll = -torch.take(log_prior, flat)
        target_log_prob = log_probs.gather(2, tokens.unsqueeze(2)).squeeze(2)
        model_nll = -target_log_prob.to(torch.float64)
        top1 = target_log_prob >= log_probs.amax(2)  # a tie for the top counts; 10x faster than argmax on CPUs
        majority = tokens == counts.argmax(-1)
        per_book = torch.stack([unigram_nll, model_nll, top1.to(torch.float64), majority.to(torch.float64)])
        self._sums[0] += scored.sum()
        self._sums[1:] += (per_book * scored).sum((1, 2)).reshape(-1)  # (4, H) flattened, sum-major

        weights = valid.expand_as(flat).to(torch.float64).reshape(-1)
        self._hist.view(-1).scatter_add_(0, flat.reshape(-1), weights)
        if self.learns_prior:
            self.prior.view(-1).scatter_add_(0, flat.reshape(-1), weights)

    def window_tensor(self) -> Tensor:
        """The window's sums as one flat float64 device tensor of :attr:`size` values."""
        return torch.cat([self._sums, self._hist.view(-1)])

    @torch.no_grad()
    def reset_window(self, reduced: Tensor | None = None) -> None:
        """Start a new window. ``reduced``: this window's tensor summed over DDP ranks; its
        histogram then replaces this rank's in the prior, so all ranks share one prior."""
        if self.learns_prior and reduced is not None:
            global_hist = reduced[self._sums.numel():].to(self.prior).view_as(self._hist)
            self.prior.add_(global_hist - self._hist)
        self._sums.zero_()
        self._hist.zero_()

    def summarize(self, values: list[float] | np.ndarray) -> dict[str, float]:
        """Flat metrics from the read values of :meth:`window_tensor` (all ranks summed).

        Metrics without data in the window (no valid or no masked token) are left out.
        """
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.size,):
            raise ValueError(f"expected {self.size} target-statistics values, got {values.shape}")
        books, head = self.num_books, self._sums.numel()
        masked = float(values[0])
        sums = values[1:head].reshape(len(_SUMS), books)
        hist = values[head:].reshape(books, self.num_classes)
        if self.learns_prior:
            self._used |= hist > 0
        per_book: list[dict[str, float]] = []
        for h in range(books):
            metrics: dict[str, float] = {}
            total = hist[h].sum()
            if total > 0:
                freqs = hist[h][hist[h] > 0] / total
                metrics["target_perplexity"] = math.exp(float(-(freqs * np.log(freqs)).sum()))
                metrics["target_top1_share"] = float(freqs.max())
            if self.learns_prior:
                metrics["target_classes_used"] = float(self._used[h].mean())
            if masked > 0:
                unigram, nll, top1, majority = (float(s) / masked for s in sums[:, h])
                metrics.update(unigram_loss=unigram, masked_nll=nll, context_gain=unigram - nll,
                               majority_accuracy=majority, masked_accuracy=top1)
            per_book.append(metrics)
        if books == 1:
            return {self.prefix + k: v for k, v in per_book[0].items()}
        out = {f"{self.prefix}{k}": float(np.mean([m[k] for m in per_book])) for k in per_book[0]}
        for h, metrics in enumerate(per_book):
            out.update({f"{self.prefix}{k}/book{h}": v for k, v in metrics.items()})
        return out

    def state_dict(self) -> dict[str, Tensor]:
        """The prior counts (a CPU copy; checkpoint time, not the step)."""
        return {"prior_counts": self.prior.detach().to("cpu", copy=True)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        counts = state["prior_counts"]
        if tuple(counts.shape) != tuple(self.prior.shape):
            raise ValueError(
                f"target statistics: saved prior counts {tuple(counts.shape)} do not fit "
                f"{self.num_books} codebook(s) x {self.num_classes} classes"
            )
        self.prior.copy_(counts.to(self.prior))
        self._used = counts.detach().cpu().numpy() > 0
