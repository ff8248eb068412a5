"""Simulated family-wise error, power and interval coverage of the experiment's verdict rule.

    PYTHONPATH=extensions python benchmarks/verdict_calibration.py

Family sizes are those of a five-arm run (2 primary, 39 secondary
comparisons); coverage compares the Student t interval the report uses with
the percentile bootstrap it used before, on normal, Laplace and skewed
(exponential) paired differences.
"""

from __future__ import annotations

import math

import numpy as np

from zero_prior.experiment.calibration import claim_rates
from zero_prior.experiment.stats import sign_flip_p_values, t_quantile


def main() -> None:
    for n in (8, 25):
        primary, secondary = claim_rates(0.0, n, (2, 39), sims=4000, seed=100 + n)
        d = np.random.default_rng(n).normal(size=(1000, 39, n))
        raw = sign_flip_p_values(d.reshape(-1, n), n_resamples=1000).reshape(1000, 39)
        print(f"null, n={n}: any false claim: primary (2) {primary:.4f}, secondary (39) {secondary:.4f}; "
              f"unadjusted over 39: {(raw < 0.05).any(axis=1).mean():.3f}")
    for effect in (0.5, 0.7):
        [power] = claim_rates(effect, 25, (2,), sims=2000, seed=9)
        print(f"effect {effect} SD, n=25, primary family: a claim in {power:.3f} of experiments")
    rng = np.random.default_rng(0)
    laws = {"normal": lambda n: rng.normal(0.3, 1, (100_000, n)),
            "laplace": lambda n: 0.3 + rng.laplace(size=(100_000, n)),
            "exponential": lambda n: rng.exponential(size=(100_000, n)) - 0.7}
    for n in (3, 5, 8, 25):
        half = t_quantile(0.975, n - 1) / math.sqrt(n)
        for name, draw in laws.items():
            x = draw(n)
            t_cover = (np.abs(x.mean(1) - 0.3) <= half * x.std(1, ddof=1)).mean()
            means = x[:2000][:, rng.integers(0, n, size=(1000, n))].mean(axis=2)
            low, high = np.quantile(means, [0.025, 0.975], axis=1)
            print(f"coverage n={n:2d} {name:11s}: t interval {t_cover:.4f}, percentile bootstrap "
                  f"{((low <= 0.3) & (0.3 <= high)).mean():.3f}")


if __name__ == "__main__":
    main()
