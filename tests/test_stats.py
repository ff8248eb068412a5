"""Paired statistics pinned to values computed by hand or by an independent re-implementation."""

import json

import numpy as np
import pytest

from zero_prior.experiment.stats import (
    BETTER,
    NO_CLEAR_DIFFERENCE,
    WORSE,
    StatsError,
    bootstrap_ci,
    compare_arms,
    paired_differences,
    permutation_test,
    verdict,
    wilcoxon_test,
)


def test_exact_permutation_p_value_by_hand():
    # |d| = 1, 2, 3, 1; observed sum 5 of at most 7. Sign patterns with sum >= 5:
    # all plus (7), one of the two 1s flipped (5, 5) -> 3; mirrored for <= -5 -> 3. p = 6 / 16.
    result = permutation_test([1.0, 2.0, 3.0, -1.0])
    assert result.p_value == 0.375
    assert result.statistic == 1.25 and result.method == "exact sign-flip, 16 patterns"


def test_exact_permutation_counts_ties_with_the_observed_sum():
    # All |d| equal: every pattern with 3 or 0 minus signs of 3 ties the observed |sum| = 3 -> 2 / 8.
    assert permutation_test([0.1, 0.1, 0.1]).p_value == 0.25
    assert permutation_test([0.0, 0.0]).p_value == 1.0


def test_monte_carlo_permutation_agrees_with_exact_and_is_never_zero():
    mc = permutation_test([1.0, 2.0, 3.0, -1.0], n_resamples=10_000, seed=5, exact_max_n=0)
    assert abs(mc.p_value - 0.375) < 0.02  # about 4 standard errors
    assert mc.method == "Monte Carlo sign-flip, 10000 resamples, seed 5"
    extreme = permutation_test(np.arange(1.0, 31.0), n_resamples=1000, seed=0)
    assert extreme.p_value == 1 / 1001  # (1 + 0 hits) / (1 + resamples)


def test_wilcoxon_exact_by_hand():
    # Ranks of |d| are 1..5, only -5 negative: W- = 5, W+ = 10, statistic = min = 5.
    # Subsets of {1..5} with rank sum <= 5: {}, 5 singletons, {1,2}, {1,3}, {1,4}, {2,3} = 10 of 32.
    # Two-sided p = 2 * 10 / 32.
    result = wilcoxon_test([1.0, 2.0, 3.0, 4.0, -5.0])
    assert result.statistic == 5.0 and result.p_value == pytest.approx(0.625, abs=1e-12)
    assert "method=exact" in result.method and result.missing is None


def test_wilcoxon_reports_missing_instead_of_a_number_when_undefined():
    result = wilcoxon_test([0.0, 0.0, 0.0])
    assert result.p_value is None and result.statistic is None
    assert result.missing == "all paired differences are zero"


def test_bootstrap_known_intervals():
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    # Two values: resampled means are 0, 0.5, 1 with chance 1/4, 1/2, 1/4; both 2.5% tails sit on the extremes.
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_matches_an_independent_percentile_computation():
    d = np.array([0.12, -0.03, 0.08, 0.15, 0.02, -0.01, 0.07])
    low, high = bootstrap_ci(d, confidence=0.9, n_resamples=2000, seed=11)
    rng = np.random.default_rng(11)
    means = np.sort(d[rng.integers(0, 7, size=(2000, 7))].mean(axis=1))

    def percentile(q):  # linear interpolation between order statistics, written out
        position = q * (len(means) - 1)
        below = int(np.floor(position))
        return means[below] + (position - below) * (means[below + 1] - means[below])

    assert low == pytest.approx(percentile(0.05), abs=1e-15) and high == pytest.approx(percentile(0.95), abs=1e-15)
    assert bootstrap_ci(d, confidence=0.9, n_resamples=2000, seed=11) == (low, high)
    assert bootstrap_ci(d, confidence=0.9, n_resamples=2000, seed=12) != (low, high)


def test_verdict_never_claims_improvement_when_the_interval_reaches_zero():
    assert verdict(-0.01, 0.03, 0.0001).label == NO_CLEAR_DIFFERENCE
    assert verdict(0.0, 0.03, 0.0001).label == NO_CLEAR_DIFFERENCE
    assert verdict(0.01, 0.03, 0.2).reason == "95% CI [0.01, 0.03] excludes 0 but p = 0.2 >= 0.05"
    assert verdict(0.01, 0.03, 0.01).label == BETTER
    assert verdict(0.01, 0.03, 0.01, higher_is_better=False).label == WORSE
    assert verdict(-0.03, -0.01, 0.01, higher_is_better=False).label == BETTER
    assert verdict(-0.01, 0.03, 0.0001).reason == "95% CI [-0.01, 0.03] includes 0"


def test_compare_arms_pairs_by_prompt():
    prompts = [f"p{i:02d}" for i in range(12)]
    control = {p: 0.2 + 0.01 * i for i, p in enumerate(prompts)}
    treatment = {p: control[p] + 0.05 + 0.001 * (i % 3) for i, p in enumerate(prompts)}
    result = compare_arms(treatment, control, "clip_t", "zero_prior", "baseline")
    assert result.prompts == prompts and result.mean_difference == pytest.approx(0.051)
    assert 0.05 <= result.ci_low <= result.ci_high <= 0.052
    permutation, wilcoxon = result.tests
    assert permutation.p_value == 2 / 4096  # only all-plus and all-minus reach the observed |sum|
    assert wilcoxon.name == "wilcoxon" and wilcoxon.p_value is not None
    assert result.verdict.label == BETTER
    assert json.loads(json.dumps(result.to_dict()))["verdict"]["label"] == BETTER


def test_unpaired_or_broken_inputs_are_refused():
    with pytest.raises(StatsError, match=r"only in treatment: \['b'\], only in control: \['c'\]"):
        paired_differences({"a": 1.0, "b": 2.0}, {"a": 1.0, "c": 2.0})
    with pytest.raises(StatsError, match="prompt 'a' has a non-finite value"):
        paired_differences({"a": float("nan"), "b": 1.0}, {"a": 1.0, "b": 1.0})
    with pytest.raises(StatsError, match="at least 2 paired differences"):
        bootstrap_ci([1.0])
