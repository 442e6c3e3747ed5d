"""The entry point nestkit loads: registers this package's components."""

from __future__ import annotations

from collections.abc import Callable

import nestkit
from nestkit_augment.room_reverb import RoomReverbConfig, build_room_reverb
from nestkit_augment.spec_augment import SpecAugmentConfig, build_spec_augment


@nestkit.hookimpl
def nestkit_register_components(register: Callable[[nestkit.Component], None]) -> None:
    register(
        nestkit.Component(
            kind="feature_augmentor",
            name="spec_augment",
            factory=build_spec_augment,
            config=SpecAugmentConfig,
            summary="SpecAugment frequency and time masks, batched, never past a length (NeMo's semantics)",
        )
    )
    register(
        nestkit.Component(
            kind="augmentor",
            name="room_reverb",
            factory=build_room_reverb,
            config=RoomReverbConfig,
            summary="reverberate the noisy view with synthetic room impulse responses (RT60, DRR, pre-delay)",
        )
    )
