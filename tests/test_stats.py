"""Paired statistics: values by hand, against brute-force enumeration, and simulated error rates and coverage."""

import itertools
import json
import math

import numpy as np
import pytest

from zero_prior.experiment.calibration import claim_rates
from zero_prior.experiment.stats import (
    BETTER,
    HIGHER,
    HOLM,
    NO_CLEAR_DIFFERENCE,
    WORSE,
    StatsError,
    adjust_family,
    compare_arms,
    holm,
    midranks,
    paired_differences,
    permutation_test,
    sign_flip_p_values,
    smallest_p,
    t_interval,
    t_quantile,
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
    assert extreme.p_value == 1 / 1001 == smallest_p(30, n_resamples=1000)  # (1 + 0 hits) / (1 + resamples)
    assert smallest_p(8) == 2 / 256 and permutation_test(np.ones(8)).p_value == smallest_p(8)


def brute_force_wilcoxon(d):
    """Two-sided exact signed-rank p by listing every sign pattern of the mid-ranked non-zero |d|."""
    d = np.asarray(d, dtype=np.float64)
    nonzero = d[d != 0]
    magnitudes = np.abs(nonzero)
    ranks = np.array([np.mean([1 + i for i, v in enumerate(sorted(magnitudes)) if v == m]) for m in magnitudes])
    centre = ranks.sum() / 2
    observed = abs(ranks[nonzero > 0].sum() - centre)
    hits = sum(abs(sum(r for r, s in zip(ranks, signs) if s) - centre) >= observed - 1e-12
               for signs in itertools.product([0, 1], repeat=len(ranks)))
    return hits / 2 ** len(ranks)


@pytest.mark.parametrize("d", [
    [1.0, 2.0, 3.0, 4.0, -5.0],
    [0.1] * 8,  # all tied: the exact p is 2 / 256, not the normal approximation's 0.0047
    [0.0, 0.2, -0.2, 0.2, 0.5, 0.0, -0.1, 0.3],  # zeros and ties
    [1.0, 1.0, -1.0, 2.0, 2.0, -3.0, 3.0, 3.0, 4.0, -4.0, 5.0, 5.0],
    [-0.3, 0.0, 0.0],
])
def test_wilcoxon_exact_distribution_matches_enumeration_with_ties_and_zeros(d):
    result = wilcoxon_test(d)
    assert result.p_value == pytest.approx(brute_force_wilcoxon(d), abs=1e-12)
    assert result.method.startswith("exact signed-rank distribution")


def test_wilcoxon_by_hand_and_against_scipy_without_ties():
    # Ranks of |d| are 1..5, only -5 negative: W- = 5, W+ = 10, statistic = min = 5.
    # Subsets of {1..5} with rank sum <= 5: {}, 5 singletons, {1,2}, {1,3}, {1,4}, {2,3} = 10 of 32.
    result = wilcoxon_test([1.0, 2.0, 3.0, 4.0, -5.0])
    assert result.statistic == 5.0 and result.p_value == pytest.approx(0.625, abs=1e-12)
    assert wilcoxon_test([0.1] * 8).p_value == 2 / 256
    assert "2 zero(s) dropped, n = 6" in wilcoxon_test([0.0, 0.2, -0.2, 0.2, 0.5, 0.0, -0.1, 0.3]).method
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is only the cross-check")
    d = np.random.default_rng(3).normal(size=20)
    assert wilcoxon_test(d).p_value == pytest.approx(scipy_stats.wilcoxon(d, method="exact").pvalue, abs=1e-12)
    np.testing.assert_array_equal(midranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_wilcoxon_reports_missing_instead_of_a_number_when_undefined():
    result = wilcoxon_test([0.0, 0.0, 0.0])
    assert result.p_value is None and result.statistic is None
    assert result.missing == "all paired differences are zero"


def test_t_quantile_and_interval_by_hand():
    # Table values of t: df 1 -> 12.706, df 8 -> 2.306, df 24 -> 2.064 (97.5%); df 2 -> 9.925 (99.5%).
    assert [round(t_quantile(0.975, df), 3) for df in (1, 8, 24)] == [12.706, 2.306, 2.064]
    assert round(t_quantile(0.995, 2), 3) == 9.925
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    # mean 2, sd 1, n 3: 2 -+ t(0.975, 2) * 1 / sqrt(3) = 2 -+ 2.484.
    low, high = t_interval([1.0, 2.0, 3.0])
    assert (round(low, 3), round(high, 3)) == (-0.484, 4.484)
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is only the cross-check")
    for df in (1, 2, 3, 7, 25, 99):
        assert t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-7)


@pytest.mark.parametrize("n", [8, 25])
def test_t_interval_covers_95_percent_in_simulation(n):
    # 20000 simulated paired samples per law; the standard error of a coverage near 0.95 is 0.0015.
    rng = np.random.default_rng(n)
    half_width = t_quantile(0.975, n - 1) / math.sqrt(n)
    for sample in (rng.normal(0.3, 1.0, size=(20_000, n)), 0.3 + rng.laplace(size=(20_000, n))):
        mean, sd = sample.mean(axis=1), sample.std(axis=1, ddof=1)
        covered = np.abs(mean - 0.3) <= half_width * sd
        assert abs(covered.mean() - 0.95) < 0.01, covered.mean()
    low, high = t_interval(sample[0])  # the function agrees with the vectorised form used above
    assert (low, high) == pytest.approx((mean[0] - half_width * sd[0], mean[0] + half_width * sd[0]))


def test_holm_by_hand():
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06.
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # 0.5 * 2 = 1.0 caps; 0.9 * 1 lifts to the running max


@pytest.mark.slow  # thousands of simulated experiments: about 1.4 s each
@pytest.mark.parametrize("n", [8, 25])
def test_family_wise_false_claim_rate_under_the_null_is_at_most_alpha(n):
    # A five-arm run: 2 primary comparisons and about 39 secondary ones. 1000 null experiments;
    # the standard error of a rate of 0.05 is 0.007.
    primary, secondary = claim_rates(0.0, n, (2, 39), sims=1000, seed=n)
    assert primary <= 0.05 + 0.014 and secondary <= 0.05 + 0.014
    # Without the adjustment the same data claim something in most experiments.
    d = np.random.default_rng(1).normal(size=(300, 39, n))
    raw = sign_flip_p_values(d.reshape(-1, n), n_resamples=1000).reshape(300, 39)
    assert (raw < 0.05).any(axis=1).mean() > 0.8


def test_a_true_effect_is_found_at_25_prompts():
    [power] = claim_rates(0.7, 25, (2,), sims=500, seed=7)
    assert power > 0.8
    prompts = [f"p{i:02d}" for i in range(25)]
    rng = np.random.default_rng(0)
    control = {p: 0.5 + 0.05 * rng.normal() for p in prompts}
    treatment = {p: control[p] + 0.03 + 0.03 * rng.normal() for p in prompts}
    made = [compare_arms(treatment, control, "dino"), compare_arms(control, control, "clip_t")]
    [dino, clip_t] = adjust_family(made, "primary")
    assert dino.verdict.label == BETTER and dino.adjustment == HOLM and dino.family == "primary"
    assert dino.adjusted_p == pytest.approx(min(1.0, 2 * dino.p_value))
    assert clip_t.verdict.label == NO_CLEAR_DIFFERENCE


def test_verdict_never_claims_improvement_when_the_interval_reaches_zero():
    assert verdict(-0.01, 0.03, 0.0001).label == NO_CLEAR_DIFFERENCE
    assert verdict(0.0, 0.03, 0.0001).label == NO_CLEAR_DIFFERENCE
    assert verdict(0.01, 0.03, 0.2).reason == "95% CI [0.01, 0.03] excludes 0 but p = 0.2 >= 0.05"
    assert verdict(0.01, 0.03, 0.01).label == BETTER
    assert verdict(0.01, 0.03, 0.01, higher_is_better=False).label == WORSE
    assert verdict(-0.03, -0.01, 0.01, higher_is_better=False).label == BETTER
    assert verdict(0.01, 0.03, 0.01, higher_is_better=None).label == HIGHER
    assert verdict(-0.01, 0.03, 0.0001).reason == "95% CI [-0.01, 0.03] includes 0"


def test_compare_arms_pairs_by_prompt():
    prompts = [f"p{i:02d}" for i in range(12)]
    control = {p: 0.2 + 0.01 * i for i, p in enumerate(prompts)}
    treatment = {p: control[p] + 0.05 + 0.001 * (i % 3) for i, p in enumerate(prompts)}
    result = compare_arms(treatment, control, "clip_t", "zero_prior", "baseline")
    assert result.units == prompts and result.mean_difference == pytest.approx(0.051)
    assert 0.05 <= result.ci_low <= result.ci_high <= 0.052 and result.interval_method.startswith("Student t")
    permutation, wilcoxon = result.tests
    assert permutation.p_value == 2 / 4096 == result.p_value == result.adjusted_p  # only all-plus/all-minus
    assert wilcoxon.name == "wilcoxon" and wilcoxon.p_value == 2 / 4096
    assert result.verdict.label == BETTER and result.n_training_runs == 1 and result.unit == "prompt"
    assert json.loads(json.dumps(result.to_dict()))["verdict"]["label"] == BETTER


def test_unpaired_or_broken_inputs_are_refused():
    with pytest.raises(StatsError, match=r"only in treatment: \['b'\], only in control: \['c'\]"):
        paired_differences({"a": 1.0, "b": 2.0}, {"a": 1.0, "c": 2.0})
    with pytest.raises(StatsError, match="prompt 'a' has a non-finite value"):
        paired_differences({"a": float("nan"), "b": 1.0}, {"a": 1.0, "b": 1.0})
    with pytest.raises(StatsError, match="at least 2 paired differences"):
        t_interval([1.0])
