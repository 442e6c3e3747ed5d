"""Linear probes of a frozen encoder (``nestkit probe``): per-layer utterance classification
against log-mel and random-init baselines.

- ``items``: which manifest lines are scored, folds or a train/test split (torch-free, so the
  CLI rejects bad input before torch loads);
- ``features``: pooled (mean, std) features per layer; ``classifier``: the logistic regression;
- ``report``: table, probe.json, probe.png; ``run``: ``run_probe``, behind ``nestkit.probe``.
"""
