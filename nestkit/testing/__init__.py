"""Conformance checks for plugin authors, like scikit-learn's ``check_estimator``.

``check_component(kind, name, config=None)`` builds one installed component and exercises the
contract of its kind (:mod:`nestkit.contracts`) on tiny CPU inputs: output shapes, lengths and
dtypes, bf16 autocast, padding that never reaches valid frames where the kind promises it, a
state-dict round trip, determinism under a seed, and each optional capability it has. The first
failing check raises :class:`ComponentCheckError` (an ``AssertionError``) naming the component
and the check; otherwise it returns a :class:`CheckReport`. In a plugin's tests::

    from nestkit.testing import check_component

    def test_my_encoder_conforms():
        check_component("encoder", "my_lstm", {"feat_in": 16, "d_model": 32})

``nestkit check-plugin DIST`` runs it on every component a distribution registers.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nestkit.errors import RecipeError
from nestkit.registry import Registry
from nestkit.testing import kinds, training
from nestkit.testing.examples import TEST_SIZES, check_section
from nestkit.testing.harness import ComponentCheckError, Subject

__all__ = ["TEST_SIZES", "CheckReport", "ComponentCheckError", "check_component"]

_CHECKS: dict[str, Callable[[Subject], None]] = {
    "preprocessor": kinds.preprocessor,
    "encoder": kinds.encoder,
    "masking": kinds.masking,
    "quantizer": kinds.quantizer,
    "decoder": kinds.decoder,
    "loss": kinds.loss,
    "augmentor": training.augmentor,
    "feature_augmentor": training.feature_augmentor,
    "optimizer": training.optimizer,
    "scheduler": training.scheduler,
    "model": training.model,
}


@dataclass
class CheckReport:
    """What :func:`check_component` ran: the checks passed, those skipped (and why), the
    optional capabilities the component has."""

    kind: str
    name: str  # provider:name
    section: dict[str, Any]
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def capabilities(self) -> list[str]:
        from nestkit.contracts import CAPABILITIES

        return [c.name for c in CAPABILITIES if c.kind == self.kind and c.name in self.passed]

    def __str__(self) -> str:
        skipped = "".join(f"; skipped {k}: {v}" for k, v in self.skipped.items())
        return f"{self.kind} {self.name}: {len(self.passed)} checks passed ({', '.join(self.passed)}){skipped}"


def check_component(
    kind: str, name: str, config: Mapping[str, Any] | None = None, *, registry: Registry | None = None
) -> CheckReport:
    """Build component ``kind``/``name`` from ``registry`` (default: the installed plugins) with
    ``config`` (its recipe section, ``name`` optional; default: what its plugin's
    ``nestkit_check_section`` answers, else its defaults with :data:`TEST_SIZES`) and check it.

    Raises :class:`ComponentCheckError` naming the first failed check. Torch's global random
    state is left as it was."""
    if registry is None:
        from nestkit.plugins import get_registry

        registry = get_registry()
    component = registry.get(kind, name)
    label = f"{kind} {component.qualified_name}"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nestkit-check-") as workdir, torch.random.fork_rng(devices=[]):
        try:
            section, who = (({**config, "name": component.qualified_name}, "") if config is not None
                            else check_section(component, Path(workdir)))
            problems: list[RecipeError] = []
            checked = registry.check(kind, section, kind, problems)
            if problems or checked is None:
                invalid = "; ".join(str(p) for p in problems) or "invalid section"
                raise RecipeError(f"{who} returned an invalid section: {invalid}" if who else invalid)
        except Exception as exc:  # noqa: BLE001 - a section that cannot be built fails the first check
            raise ComponentCheckError(label, "build", " ".join(str(exc).split())) from exc
        subject = Subject(kind, label, checked[1].model_dump(), lambda **context: registry.make(*checked, key=kind, **context))
        _CHECKS[kind](subject)
    return CheckReport(kind, component.qualified_name, section, subject.passed, subject.skipped, time.perf_counter() - started)
