"""Both components pass nestkit's conformance checks for their kinds (nestkit.testing)."""

from __future__ import annotations

from nestkit.testing import check_component


def test_spec_augment_conforms() -> None:
    report = check_component("feature_augmentor", "spec_augment", {"freq_masks": 2, "freq_width": 4, "time_masks": 2, "time_width": 0.1})
    assert {"shapes", "padding", "determinism", "state_dict"} <= set(report.passed)


def test_room_reverb_conforms() -> None:
    report = check_component("augmentor", "room_reverb", {"prob": 1.0, "rt60_min": 0.1, "rt60_max": 0.3, "ir_duration": 0.3})
    assert {"clean target", "padding", "generator", "determinism"} <= set(report.passed)
