"""How often the report's verdict rule claims a difference, by simulation: false claims and power.

Used by the tests (family-wise error under the null at most alpha, a true
effect found at 25 prompts) and by ``benchmarks/verdict_calibration.py``, and
useful to plan a design: how many prompts or training seeds an effect of a
given size (in standard deviations of the per-unit difference) needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .stats import holm, sign_flip_p_values, t_quantile


def claim_rates(effect: float, n: int, families: Sequence[int], sims: int = 1000, seed: int = 0,
                alpha: float = 0.05, confidence: float = 0.95, n_resamples: int = 1000) -> list[float]:
    """Per family size ``m``: the share of simulated experiments with at least one claim in that family.

    Each comparison draws ``n`` independent N(effect, 1) paired differences;
    p from the sign-flip test, Holm within the family, a claim when the
    adjusted p < alpha and the t interval excludes 0 (the rule of
    ``stats.adjust_family`` and ``stats.verdict``). With ``effect = 0`` every
    claim is false, so the rate is the family-wise error.

    >>> claim_rates(0.0, 8, [2], sims=200, seed=1)[0] <= 0.1
    True
    """
    rng = np.random.default_rng(seed)
    half = t_quantile((1 + confidence) / 2, n - 1) / math.sqrt(n)
    rates = []
    for m in families:
        d = rng.normal(effect, 1.0, size=(sims, m, n))
        p = sign_flip_p_values(d.reshape(-1, n), n_resamples=n_resamples, seed=seed).reshape(sims, m)
        excludes = np.abs(d.mean(axis=2)) > half * d.std(axis=2, ddof=1)
        rates.append(float(((holm(p) < alpha) & excludes).any(axis=1).mean()))
    return rates
