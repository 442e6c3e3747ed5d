"""Is pretraining learning? Statistics of the targets and warnings that name the problem.

- ``nestkit.health.target_stats``: ``TargetStatistics``, device-side accumulators of target
  perplexity, the unigram (token-prior) baseline and the context gain over it (needs torch).
- ``nestkit.health.warnings``: ``TargetHealthConfig`` (the recipe's ``trainer.target_health``)
  and ``TargetHealthChecker``, one-line warnings with a fix (torch-free: the recipe imports it).
"""
