"""Paired comparison of two arms: differences per unit, a t interval, exact paired tests, Holm, the verdict.

Every arm is evaluated on the same prompts with the same seeds, so values are
paired: per *unit* one number per arm and the difference ``treatment -
control``. The unit is the prompt when each arm was trained once (the verdict
is then about those two trained LoRAs, not about the method), and the training
run when there are several training seeds (per-seed means over the prompts:
a claim about the method needs training runs as replicates).

- Interval: Student t interval of the mean difference (``t_interval``), which
  covers at 3 to 25 units where the percentile bootstrap does not; the t
  quantile is computed exactly here (no scipy).
- Paired permutation (sign-flip) test of the mean difference, numpy only:
  exact over all ``2**n`` sign patterns for ``n <= 16``, Monte Carlo otherwise.
  It is the test the verdict uses.
- Wilcoxon signed-rank test with the exact distribution at every ``n``, ties
  mid-ranked and zeros dropped (``wilcoxon_test``), numpy only.
- Multiplicity: comparisons are grouped in families; Holm's step-down
  adjustment controls the chance of any false claim within a family
  (``adjust_family``).
- ``verdict`` claims a direction only when the interval excludes zero *and*
  the adjusted permutation p-value is below ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..errors import StatsError

BETTER = "better"
WORSE = "worse"
HIGHER = "higher"  # direction-only metrics (brightness, ...) have no better or worse
LOWER = "lower"
NO_CLEAR_DIFFERENCE = "no clear difference"
T_INTERVAL = "Student t interval of the mean paired difference"
HOLM = "Holm step-down (family-wise error)"
UNADJUSTED = "none"
PROMPT_UNIT = "prompt"
RUN_UNIT = "training run"
EXACT_MAX_N = 16


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

    label: str  # BETTER, WORSE, HIGHER, LOWER or NO_CLEAR_DIFFERENCE, from the treatment's side
    reason: str


@dataclass(frozen=True)
class Comparison:
    """Treatment vs. control on one metric, per unit and in summary.

    ``p_value`` is the raw permutation p; ``adjusted_p`` the same after the
    multiplicity adjustment of ``family`` (``adjustment`` names it), and the
    verdict uses the adjusted one.
    """

    metric: str
    treatment: str
    control: str
    higher_is_better: bool | None  # None: a direction only
    unit: str  # PROMPT_UNIT or RUN_UNIT
    units: list[str]
    differences: list[float]  # treatment - control, in ``units`` order
    n_training_runs: int
    mean_difference: float
    confidence: float
    ci_low: float
    ci_high: float
    interval_method: str
    n_resamples: int
    seed: int
    tests: list[PairedTest]
    p_value: float
    family: str | None
    adjustment: str
    adjusted_p: float
    alpha: float
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (plain floats, lists and dicts)."""
        return asdict(self)


def paired_differences(
    treatment: Mapping[str, float], control: Mapping[str, float]
) -> tuple[list[str], np.ndarray]:
    """Per-unit ``treatment - control``, in sorted unit order.

    Both arms must cover exactly the same units: a prompt measured in one
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
    units = sorted(treatment)
    diffs = np.array([float(treatment[u]) - float(control[u]) for u in units], dtype=np.float64)
    bad = [u for u, d in zip(units, diffs) if not math.isfinite(d)]
    if bad:
        raise StatsError(f"prompt {bad[0]!r} has a non-finite value in one arm; fix or drop that measurement")
    return units, diffs


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile (> 0.5) of Student's t with ``df`` degrees of freedom.

    Inverts the closed-form two-sided mass of t for integer ``df``
    (Abramowitz & Stegun 26.7.3-4) by bisection, so no scipy is needed.

    >>> round(t_quantile(0.975, 8), 3)
    2.306
    """
    if not 0.5 < probability < 1 or df < 1:
        raise StatsError(f"t quantile needs 0.5 < probability < 1 and df >= 1, got {probability}, {df}")
    target = 2 * probability - 1
    low, high = 0.0, 1.0
    while _t_central_mass(high, df) < target:
        low, high = high, high * 2
    for _ in range(200):
        middle = (low + high) / 2
        if _t_central_mass(middle, df) < target:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    return (low + high) / 2


def _t_central_mass(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df``, as a finite trigonometric series."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 1:
        term, total = 1.0, 1.0
        for k in range(1, (df - 1) // 2):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        series = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
        return 2 / math.pi * (theta + series)
    term, total = 1.0, 1.0
    for k in range(1, df // 2):
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_interval(differences: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student t interval of the mean: ``mean -+ t_{(1+c)/2, n-1} * sd / sqrt(n)``.

    >>> t_interval([2.0, 2.0, 2.0])
    (2.0, 2.0)
    """
    d = _as_differences(differences)
    if not 0 < confidence < 1:
        raise StatsError(f"confidence={confidence}: must lie strictly between 0 and 1, e.g. 0.95")
    half = t_quantile((1 + confidence) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    mean = float(d.mean())
    return mean - half, mean + half


def sign_flip_p_values(
    rows: np.ndarray, n_resamples: int = 10_000, seed: int = 0, exact_max_n: int = EXACT_MAX_N
) -> np.ndarray:
    """Two-sided sign-flip p-values of "mean = 0" for every row of ``rows`` (``[m, n]``) at once.

    Exact over all ``2**n`` sign patterns when ``n <= exact_max_n``; otherwise
    ``(1 + hits) / (1 + n_resamples)`` over one seeded set of random patterns
    shared by the rows, which never returns an impossible p = 0.
    """
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    n = rows.shape[1]
    observed = np.abs(rows.sum(axis=1))
    # Sums that equal the observed one up to rounding count as "as extreme".
    tolerance = 1e-10 * np.abs(rows).sum(axis=1)
    if n <= exact_max_n:
        patterns = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)
        signs = 1.0 - 2.0 * (patterns & 1)
        hits = (np.abs(rows @ signs.T) >= (observed - tolerance)[:, None]).sum(axis=1)
        return hits / 2**n
    signs = 1.0 - 2.0 * np.random.default_rng(seed).integers(0, 2, size=(n_resamples, n))
    hits = (np.abs(rows @ signs.T) >= (observed - tolerance)[:, None]).sum(axis=1)
    return (1 + hits) / (1 + n_resamples)


def permutation_test(
    differences: Sequence[float] | np.ndarray,
    n_resamples: int = 10_000,
    seed: int = 0,
    exact_max_n: int = EXACT_MAX_N,
) -> PairedTest:
    """Two-sided paired sign-flip test of "mean difference = 0" (see ``sign_flip_p_values``).

    >>> permutation_test([1.0, 2.0, 3.0, -1.0]).p_value
    0.375
    """
    d = _as_differences(differences)
    n = len(d)
    [p] = sign_flip_p_values(d[None], n_resamples, seed, exact_max_n)
    if n <= exact_max_n:
        method = f"exact sign-flip, {2**n} patterns"
    else:
        method = f"Monte Carlo sign-flip, {n_resamples} resamples, seed {seed}"
    return PairedTest("permutation", method, float(d.mean()), float(p))


def smallest_p(n: int, n_resamples: int = 10_000, exact_max_n: int = EXACT_MAX_N) -> float:
    """The smallest p-value ``permutation_test`` can return for ``n`` units.

    >>> smallest_p(8)
    0.0078125
    """
    return 2 / 2**n if n <= exact_max_n else 1 / (1 + n_resamples)


def midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, tied values sharing the mean of their ranks.

    >>> midranks(np.array([3.0, 1.0, 3.0]))
    array([2.5, 1. , 2.5])
    """
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def signed_rank_distribution(doubled_ranks: Sequence[int]) -> np.ndarray:
    """``P(2 W+ = k)`` for ``k = 0..sum(doubled_ranks)`` when each rank's sign is a fair coin.

    Ranks are doubled so mid-ranks (multiples of 1/2) are integers; the
    distribution is the convolution of one two-point law per rank, exact for
    ties as well as without them (probabilities are dyadic rationals).
    """
    distribution = np.zeros(int(sum(doubled_ranks)) + 1)
    distribution[0] = 1.0
    for rank in doubled_ranks:
        shifted = np.zeros_like(distribution)
        shifted[rank:] = distribution[: len(distribution) - rank]
        distribution = 0.5 * (distribution + shifted)
    return distribution


def wilcoxon_test(differences: Sequence[float] | np.ndarray) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test with its exact distribution (zeros dropped, ties mid-ranked).

    Reported missing, with the reason, when every difference is zero (the
    test is undefined there). The statistic is ``min(W+, W-)``.

    >>> wilcoxon_test([1.0, 2.0, 3.0, 4.0, -5.0]).p_value
    0.625
    """
    d = _as_differences(differences)
    nonzero = d[d != 0]
    method = "exact signed-rank distribution, zeros dropped, ties mid-ranked"
    if not len(nonzero):
        return PairedTest("wilcoxon", method, missing="all paired differences are zero")
    doubled = np.rint(2 * midranks(np.abs(nonzero))).astype(np.int64)
    total = int(doubled.sum())
    observed = int(doubled[nonzero > 0].sum())
    distribution = signed_rank_distribution(doubled)
    distance = abs(2 * observed - total)  # |2 * (2W+) - total|: integers, so ties are exact
    extreme = np.abs(2 * np.arange(total + 1) - total) >= distance
    p = min(1.0, float(distribution[extreme].sum()))
    dropped = len(d) - len(nonzero)
    if dropped:
        method += f" ({dropped} zero(s) dropped, n = {len(nonzero)})"
    return PairedTest("wilcoxon", method, min(observed, total - observed) / 2, p)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (in input order), capped at 1.

    Rejecting every adjusted p below alpha keeps the chance of any false
    rejection in the family at most alpha, whatever the dependence.

    >>> holm([0.01, 0.04, 0.03]).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    ranked = np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1))
    adjusted = np.empty_like(ranked)
    np.put_along_axis(adjusted, order, ranked, axis=-1)
    return adjusted


def verdict(
    ci_low: float,
    ci_high: float,
    p_value: float,
    higher_is_better: bool | None = True,
    alpha: float = 0.05,
    confidence: float = 0.95,
    p_name: str = "p",
) -> Verdict:
    """What may be claimed about the treatment: better / worse (higher / lower), or no clear difference.

    A direction is claimed only when the whole interval lies strictly on one
    side of zero and ``p_value < alpha``; otherwise the answer is "no clear
    difference", never an improvement. ``higher_is_better=None`` (a metric
    with a direction only) gives "higher" or "lower".

    >>> verdict(-0.01, 0.03, 0.20).label
    'no clear difference'
    """
    interval = f"{confidence:.0%} CI [{ci_low:.4g}, {ci_high:.4g}]"
    if ci_low <= 0 <= ci_high:
        return Verdict(NO_CLEAR_DIFFERENCE, f"{interval} includes 0")
    if p_value >= alpha:
        return Verdict(NO_CLEAR_DIFFERENCE, f"{interval} excludes 0 but {p_name} = {p_value:.4g} >= {alpha}")
    higher = ci_low > 0
    if higher_is_better is None:
        label = HIGHER if higher else LOWER
    else:
        label = BETTER if higher == higher_is_better else WORSE
    direction = "above" if higher else "below"
    return Verdict(label, f"{interval} lies {direction} 0 and {p_name} = {p_value:.4g} < {alpha}")


def compare_arms(
    treatment: Mapping[str, float],
    control: Mapping[str, float],
    metric: str,
    treatment_name: str = "treatment",
    control_name: str = "control",
    higher_is_better: bool | None = True,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
    unit: str = PROMPT_UNIT,
    n_training_runs: int = 1,
) -> Comparison:
    """Paired comparison of two arms' per-unit values on one metric, unadjusted (``adjust_family`` adjusts).

    Example::

        c = compare_arms(zero_prior_clip_t, baseline_clip_t, "clip_t", "zero_prior", "baseline")
        c.verdict.label, c.ci_low, c.ci_high  # -> ('no clear difference', -0.004, 0.011)
    """
    units, d = paired_differences(treatment, control)
    low, high = t_interval(d, confidence=confidence)
    permutation = permutation_test(d, n_resamples=n_resamples, seed=seed)
    assert permutation.p_value is not None  # the permutation test always produces one
    return Comparison(
        metric=metric,
        treatment=treatment_name,
        control=control_name,
        higher_is_better=higher_is_better,
        unit=unit,
        units=units,
        differences=[float(x) for x in d],
        n_training_runs=n_training_runs,
        mean_difference=float(d.mean()),
        confidence=confidence,
        ci_low=low,
        ci_high=high,
        interval_method=T_INTERVAL,
        n_resamples=n_resamples,
        seed=seed,
        tests=[permutation, wilcoxon_test(d)],
        p_value=permutation.p_value,
        family=None,
        adjustment=UNADJUSTED,
        adjusted_p=permutation.p_value,
        alpha=alpha,
        verdict=verdict(low, high, permutation.p_value, higher_is_better, alpha, confidence),
    )


def adjust_family(comparisons: Sequence[Comparison], family: str) -> list[Comparison]:
    """The comparisons of one family with Holm-adjusted p-values and the verdicts those allow."""
    adjusted = holm([c.p_value for c in comparisons]) if comparisons else []
    return [
        replace(c, family=family, adjustment=HOLM, adjusted_p=float(p),
                verdict=verdict(c.ci_low, c.ci_high, float(p), c.higher_is_better, c.alpha, c.confidence,
                                "Holm-adjusted p"))
        for c, p in zip(comparisons, adjusted)
    ]


def _as_differences(differences: Sequence[float] | np.ndarray) -> np.ndarray:
    """A finite 1-D float64 array of at least two differences."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise StatsError(f"need a flat list of at least 2 paired differences, got shape {d.shape}; evaluate more "
                         "prompts or train more seeds")
    if not np.all(np.isfinite(d)):
        raise StatsError("paired differences contain NaN or infinity; fix the measurement that produced them")
    return d
