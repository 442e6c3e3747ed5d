"""nestkit-bestrq-extras: alternative BEST-RQ targets and losses for nestkit, as a plugin.

Installed, it registers (entry-point group ``nestkit``, see ``nestkit_bestrq_extras.plugin``):

- ``quantizer: kmeans`` -- nearest-centroid (HuBERT-style) targets from a centroid file,
  fitted with ``python -m nestkit_bestrq_extras.fit_kmeans``;
- ``loss: label_smoothed_mlm`` -- the masked-token NLL with label smoothing.
"""

from __future__ import annotations

__version__ = "0.1.0"
