"""Locating the recorded NeMo reference folder shared by the parity tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nestkit.recipe import model_section  # noqa: F401  (re-exported for the parity tests)

REFERENCE = Path(os.environ.get("NESTKIT_NEMO_REFERENCE", Path(__file__).resolve().parents[1].parent / "shared/nemo_reference"))
ROOT = Path(__file__).resolve().parents[1]


def reference_file(name: str) -> Path:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"NeMo reference {path} is absent (set NESTKIT_NEMO_REFERENCE)")
    return path
