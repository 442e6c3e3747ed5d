"""The probe's classifier: L2-regularised multinomial logistic regression, fitted by L-BFGS.

All folds are fitted at once as one batched, convex problem (the folds' parameters are
independent, so the joint optimum is each fold's optimum). Features are standardised with each
fold's training statistics; parameters start at zero and the data order is fixed, so a fit is
deterministic. Float64 throughout: the problems are small and exactness is cheap. The gradient
is analytic and the L-BFGS loop is our own: ``torch.optim`` would import the compiler stack,
seconds of start-up for a fit that takes a fraction of one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class _Objective:
    """Mean cross-entropy over each fold's training items + l2/2 * |W|^2, summed over folds."""

    def __init__(self, features: Tensor, labels: Tensor, is_test: Tensor, num_classes: int, l2: float) -> None:
        x = features.to(torch.float64)
        # Global standardisation only conditions the problem; each fold is then standardised with its
        # own training statistics (affine-invariant: as if fitted on the raw features).
        self.x = (x - x.mean(0)) / x.std(0, correction=0).clamp_min(1e-12)
        self.train = (~is_test).to(x.dtype)  # (P, N)
        count = self.train.sum(1, keepdim=True)
        self.mean = self.train @ self.x / count  # (P, D)
        std = (self.train @ self.x.square() / count - self.mean.square()).clamp_min(0).sqrt()
        self.std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant in a fold: left alone
        self.weight_of_item = self.train / count  # (P, N): each fold's mean over its training items
        self.onehot = torch.nn.functional.one_hot(labels, num_classes).to(x.dtype)  # (N, C)
        self.l2 = l2
        self.shape = (self.mean.shape[0], self.mean.shape[1] + 1, num_classes)  # W (P, D, C) and b as row D

    def logits(self, params: Tensor) -> Tensor:
        """(P, N, C): ((x - mean) / std) W + b, without materialising the standardised features."""
        weight, bias = params[:, :-1], params[:, -1]
        scaled = weight / self.std[:, :, None]
        offset = torch.einsum("pd,pdc->pc", self.mean, scaled)
        return torch.einsum("nd,pdc->pnc", self.x, scaled) + (bias - offset)[:, None, :]

    def __call__(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        params = flat.view(self.shape)
        weight = params[:, :-1]
        log_probs = self.logits(params).log_softmax(-1)
        nll = -(log_probs * self.onehot).sum(-1)  # (P, N)
        loss = (nll * self.weight_of_item).sum() + 0.5 * self.l2 * weight.square().sum()
        residual = (log_probs.exp() - self.onehot) * self.weight_of_item[:, :, None]  # d loss / d logits
        grad_w = (torch.einsum("nd,pnc->pdc", self.x, residual) - self.mean[:, :, None] * residual.sum(1)[:, None, :])
        grad_w = grad_w / self.std[:, :, None] + self.l2 * weight
        return loss, torch.cat([grad_w, residual.sum(1)[:, None, :]], dim=1).reshape(-1)


def minimize(fn: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor, *, max_iter: int = 500,
             tolerance: float = 1e-5, history: int = 10) -> Tensor:
    """L-BFGS with a backtracking (Armijo) line search; stops when max |gradient| <= tolerance."""
    loss, grad = fn(x)
    pairs: list[tuple[Tensor, Tensor, Tensor]] = []  # (s, y, 1 / y.s)
    for _ in range(max_iter):
        if float(grad.abs().max()) <= tolerance:
            break
        q, alphas = grad.clone(), []
        for s, y, rho in reversed(pairs):
            alphas.append(rho * (s @ q))
            q -= alphas[-1] * y
        if pairs:
            s, y, _ = pairs[-1]
            q *= (s @ y) / (y @ y)
        else:
            q /= max(1.0, float(grad.norm()))
        for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
            q += s * (alpha - rho * (y @ q))
        direction, slope, step = -q, float(-(grad @ q)), 1.0
        while True:
            candidate = x + step * direction
            new_loss, new_grad = fn(candidate)
            if float(new_loss) <= float(loss) + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, y = candidate - x, new_grad - grad
        if float(s @ y) > 1e-12:
            pairs = [*pairs[-(history - 1):], (s, y, 1.0 / (s @ y))]
        x, loss, grad = candidate, new_loss, new_grad
    return x


def fold_accuracies(
    features: Tensor, labels: Tensor, is_test: Tensor, num_classes: int, *, l2: float = 1e-3, max_iter: int = 500,
) -> Tensor:
    """Accuracy on each fold's test items of a classifier fitted on the others.

    features (N, D), labels (N,) int64, is_test (P, N) bool: P train/test partitions -> (P,).
    """
    objective = _Objective(features, labels, is_test, num_classes, l2)
    start = torch.zeros(objective.shape, dtype=torch.float64, device=objective.x.device).reshape(-1)
    params = minimize(objective, start, max_iter=max_iter).view(objective.shape)
    hits = (objective.logits(params).argmax(-1) == labels).to(torch.float64)
    test = is_test.to(torch.float64)
    return (hits * test).sum(1) / test.sum(1).clamp_min(1.0)
