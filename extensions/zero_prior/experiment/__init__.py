"""The controlled experiment: paired ai-toolkit runs per arm, evaluation on held-out prompts, a report.

One job per module, each importing only the ones above it:

- ``captions``, ``stats``, ``metrics/``: paired captions, paired statistics, image metrics (no experiment state);
- ``spec``: the strict parse of ``EXPERIMENT.yaml`` (a base ai-toolkit job + an ``experiment:`` block);
- ``arms``: one ai-toolkit job per arm, identical except what the arm changes;
- ``layout``: where each output lives, and ``experiment_log.json``;
- ``train``: paired captions written, each arm through ai-toolkit's ``run.py``;
- ``evaluate``: images from every arm's trained weights, metrics, paired statistics -> ``metrics.json``;
- ``report``: ``report.md``, comparison grids and training-curve plots;
- ``pipeline``: all of it in order (``run_experiment``).

Importing this package is cheap (nothing is imported here), so the CLI's ``--help`` stays instant.
"""
