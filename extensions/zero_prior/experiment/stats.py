"""Paired comparison of two arms over the same prompts: differences, bootstrap CI, paired tests, verdict.

Every arm is evaluated on the same prompts with the same seeds, so the unit
of comparison is the prompt: one number per prompt and arm (for example the
mean CLIP-T over that prompt's seeds), and the per-prompt difference
``treatment - control``. Pairing removes the prompt-to-prompt variation that
would otherwise swamp a small effect.

- Bootstrap: percentile confidence interval of the mean difference, from a
  seeded ``numpy.random.Generator`` (same seed, same interval on every machine).
- Paired permutation (sign-flip) test of the mean difference, numpy only:
  exact over all ``2**n`` sign patterns for small ``n``, Monte Carlo otherwise.
- Wilcoxon signed-rank test via scipy (the ``eval`` extra); reported missing,
  with the reason, when scipy is absent or the test is undefined.
- ``verdict`` claims a difference only when the interval excludes zero *and*
  the permutation p-value is below ``alpha``; an interval touching or crossing
  zero is always "no clear difference".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import StatsError

BETTER = "better"
WORSE = "worse"
NO_CLEAR_DIFFERENCE = "no clear difference"


@dataclass(frozen=True)
class PairedTest:
    """One paired test's outcome; ``missing`` holds the reason when it could not be computed."""

    name: str
    method: str
    statistic: float | None = None
    p_value: float | None = None
    missing: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The conclusion a report may state, and why."""

    label: str  # BETTER, WORSE or NO_CLEAR_DIFFERENCE, from the treatment's side
    reason: str


@dataclass(frozen=True)
class Comparison:
    """Treatment vs. control on one metric, per prompt and in summary."""

    metric: str
    treatment: str
    control: str
    higher_is_better: bool
    prompts: list[str]
    differences: list[float]  # treatment - control, in ``prompts`` order
    mean_difference: float
    confidence: float
    ci_low: float
    ci_high: float
    n_resamples: int
    seed: int
    tests: list[PairedTest]
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (plain floats, lists and dicts)."""
        return asdict(self)


def paired_differences(
    treatment: Mapping[str, float], control: Mapping[str, float]
) -> tuple[list[str], np.ndarray]:
    """Per-prompt ``treatment - control``, in sorted prompt order.

    Both arms must cover exactly the same prompts: a prompt measured in one
    arm only would silently unpair the comparison.

    >>> paired_differences({"a": 0.3, "b": 0.5}, {"a": 0.1, "b": 0.7})
    (['a', 'b'], array([ 0.2, -0.2]))
    """
    if set(treatment) != set(control):
        only_t = sorted(set(treatment) - set(control))
        only_c = sorted(set(control) - set(treatment))
        raise StatsError(
            f"arms cover different prompts (only in treatment: {only_t[:3]}, only in control: {only_c[:3]}); "
            "evaluate both arms on the same prompt list"
        )
    prompts = sorted(treatment)
    diffs = np.array([float(treatment[p]) - float(control[p]) for p in prompts], dtype=np.float64)
    bad = [p for p, d in zip(prompts, diffs) if not math.isfinite(d)]
    if bad:
        raise StatsError(f"prompt {bad[0]!r} has a non-finite value in one arm; fix or drop that measurement")
    return prompts, diffs


def bootstrap_ci(
    differences: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences``.

    Draws ``n_resamples`` index vectors at once with
    ``np.random.default_rng(seed).integers(0, n, (n_resamples, n))`` and takes
    the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles
    (numpy's default linear interpolation) of the resampled means.

    >>> bootstrap_ci([2.0, 2.0, 2.0])
    (2.0, 2.0)
    """
    d = _as_differences(differences)
    if not 0 < confidence < 1:
        raise StatsError(f"confidence={confidence}: must lie strictly between 0 and 1, e.g. 0.95")
    if n_resamples < 1:
        raise StatsError(f"n_resamples={n_resamples}: must be at least 1 (10000 is the default)")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_resamples, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def permutation_test(
    differences: Sequence[float] | np.ndarray,
    n_resamples: int = 10_000,
    seed: int = 0,
    exact_max_n: int = 16,
) -> PairedTest:
    """Two-sided paired sign-flip test of "mean difference = 0".

    Under the null each difference is as likely positive as negative, so the
    p-value is the share of sign patterns whose ``|sum|`` reaches the
    observed one. Exact (all ``2**n`` patterns) when ``n <= exact_max_n``;
    otherwise ``(1 + hits) / (1 + n_resamples)`` over seeded random patterns,
    which never returns an impossible p = 0.

    >>> permutation_test([1.0, 2.0, 3.0, -1.0]).p_value
    0.375
    """
    d = _as_differences(differences)
    n = len(d)
    observed = abs(d.sum())
    # Sums that equal the observed one up to rounding count as "as extreme".
    tolerance = 1e-10 * np.abs(d).sum()
    if n <= exact_max_n:
        patterns = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)
        signs = 1.0 - 2.0 * (patterns & 1)
        hits = int((np.abs(signs @ d) >= observed - tolerance).sum())
        return PairedTest("permutation", f"exact sign-flip, {2**n} patterns", float(d.mean()), hits / 2**n)
    rng = np.random.default_rng(seed)
    signs = 1.0 - 2.0 * rng.integers(0, 2, size=(n_resamples, n))
    hits = int((np.abs(signs @ d) >= observed - tolerance).sum())
    method = f"Monte Carlo sign-flip, {n_resamples} resamples, seed {seed}"
    return PairedTest("permutation", method, float(d.mean()), (1 + hits) / (1 + n_resamples))


def wilcoxon_test(differences: Sequence[float] | np.ndarray) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test (scipy), exact without ties or zeros for n <= 50.

    Returned as missing, with the reason, when scipy is not installed or all
    differences are zero (the test is undefined there).

    >>> wilcoxon_test([1.0, 2.0, 3.0, 4.0, -5.0]).p_value
    0.625
    """
    d = _as_differences(differences)
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        return PairedTest("wilcoxon", "scipy.stats.wilcoxon", missing="scipy is not installed; pip install "
                                                                      "'zero-prior[eval]'")
    if not np.any(d):
        return PairedTest("wilcoxon", "scipy.stats.wilcoxon", missing="all paired differences are zero")
    magnitudes = np.abs(d[d != 0])
    exact = len(d) <= 50 and np.all(d != 0) and len(np.unique(magnitudes)) == len(magnitudes)
    method = "exact" if exact else "approx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = wilcoxon(d, zero_method="wilcox", alternative="two-sided", method=method)
    notes = "; ".join(sorted({str(w.message) for w in caught}))
    description = f"scipy.stats.wilcoxon, zero_method=wilcox, method={method}" + (f" ({notes})" if notes else "")
    return PairedTest("wilcoxon", description, float(result.statistic), float(result.pvalue))


def verdict(
    ci_low: float,
    ci_high: float,
    p_value: float,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> Verdict:
    """What may be claimed about the treatment: better, worse, or no clear difference.

    A direction is claimed only when the whole interval lies strictly on one
    side of zero and ``p_value < alpha``; otherwise the answer is "no clear
    difference", never an improvement.

    >>> verdict(-0.01, 0.03, 0.20).label
    'no clear difference'
    """
    interval = f"{confidence:.0%} CI [{ci_low:.4g}, {ci_high:.4g}]"
    if ci_low <= 0 <= ci_high:
        return Verdict(NO_CLEAR_DIFFERENCE, f"{interval} includes 0")
    if p_value >= alpha:
        return Verdict(NO_CLEAR_DIFFERENCE, f"{interval} excludes 0 but p = {p_value:.4g} >= {alpha}")
    higher = ci_low > 0
    label = BETTER if higher == higher_is_better else WORSE
    direction = "above" if higher else "below"
    return Verdict(label, f"{interval} lies {direction} 0 and p = {p_value:.4g} < {alpha}")


def compare_arms(
    treatment: Mapping[str, float],
    control: Mapping[str, float],
    metric: str,
    treatment_name: str = "treatment",
    control_name: str = "control",
    higher_is_better: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Comparison:
    """Paired comparison of two arms' per-prompt values on one metric.

    Example::

        c = compare_arms(zero_prior_clip_t, baseline_clip_t, "clip_t", "zero_prior", "baseline")
        c.verdict.label, c.ci_low, c.ci_high  # -> ('no clear difference', -0.004, 0.011)
    """
    prompts, d = paired_differences(treatment, control)
    low, high = bootstrap_ci(d, confidence=confidence, n_resamples=n_resamples, seed=seed)
    permutation = permutation_test(d, n_resamples=n_resamples, seed=seed)
    tests = [permutation, wilcoxon_test(d)]
    assert permutation.p_value is not None  # the permutation test always produces one
    return Comparison(
        metric=metric,
        treatment=treatment_name,
        control=control_name,
        higher_is_better=higher_is_better,
        prompts=prompts,
        differences=[float(x) for x in d],
        mean_difference=float(d.mean()),
        confidence=confidence,
        ci_low=low,
        ci_high=high,
        n_resamples=n_resamples,
        seed=seed,
        tests=tests,
        verdict=verdict(low, high, permutation.p_value, higher_is_better, alpha, confidence),
    )


def _as_differences(differences: Sequence[float] | np.ndarray) -> np.ndarray:
    """A finite 1-D float64 array of at least two differences."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise StatsError(f"need a flat list of at least 2 paired differences, got shape {d.shape}; evaluate more "
                         "prompts")
    if not np.all(np.isfinite(d)):
        raise StatsError("paired differences contain NaN or infinity; fix the measurement that produced them")
    return d
