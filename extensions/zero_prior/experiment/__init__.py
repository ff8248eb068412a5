"""The controlled experiment: paired ai-toolkit runs per arm, evaluation on held-out prompts, a report.

One job per module, in the order the experiment runs:

- ``spec``: the strict parse of ``EXPERIMENT.yaml`` (a base ai-toolkit job + an ``experiment:`` block);
- ``arms``: one ai-toolkit job per arm, identical except what the arm changes;
- ``runner``: paired captions, each arm through ai-toolkit's ``run.py``, ``experiment_log.json``;
- ``evaluate``: images from every arm's trained weights, metrics, paired statistics -> ``metrics.json``;
- ``report``: ``report.md``, comparison grids and training-curve plots.

Importing this package is cheap (nothing heavy is imported here), so the CLI's
``--help`` stays instant.
"""

from __future__ import annotations

from ..errors import ZeroPriorError


class ExperimentError(ZeroPriorError, RuntimeError):
    """An arm failed or an output the next step needs is missing; the message names the file and the fix."""
