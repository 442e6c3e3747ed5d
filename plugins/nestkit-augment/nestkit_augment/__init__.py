"""nestkit-augment: SpecAugment and synthetic room reverberation for nestkit, as a plugin.

Installed, it registers (entry-point group ``nestkit``, see ``nestkit_augment.plugin``):

- ``feature_augmentor: spec_augment`` -- batched SpecAugment on (B, D, T) log-mel features;
- ``augmentor: room_reverb`` -- synthetic room impulse responses applied to the noisy view.
"""

from __future__ import annotations

__version__ = "0.1.0"
