"""Anytime-valid comparisons (chalicelib.evidence.sequential): the A/A simulation
read fifty times, power, the formulas by hand, and the sample-ratio check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chisquare

from chalicelib.evidence.sequential import (
    Sample,
    compare_means,
    half_width,
    required_per_version,
    sample_ratio_check,
    tuning_rho,
)

ALPHA = 0.05
SIMULATIONS = 1000
LOOKS = 50
STEP = 20


def cumulative_successes(rng: np.random.Generator, rate: float) -> np.ndarray:
    """Successes so far at each of the fifty looks, per simulation (20 per look)."""
    outcomes = rng.random((SIMULATIONS, LOOKS * STEP)) < rate
    return outcomes.cumsum(axis=1)[:, STEP - 1 :: STEP]


def false_verdict_rates(
    control: np.ndarray, candidate: np.ndarray
) -> tuple[float, float]:
    """The share of simulations that declare a difference at any look: by the
    confidence sequence, and by a naive two-sided z-test at alpha."""
    counts = np.arange(1, LOOKS + 1) * STEP
    ours = 0
    for first, second in zip(control, candidate, strict=True):
        ours += any(
            compare_means(
                Sample.proportion(int(a), int(n)), Sample.proportion(int(b), int(n))
            ).settled
            for a, b, n in zip(first, second, counts, strict=True)
        )
    first_share, second_share = control / counts, candidate / counts
    variance = (
        first_share * (1 - first_share) + second_share * (1 - second_share)
    ) / counts
    z = np.divide(
        np.abs(second_share - first_share),
        np.sqrt(variance),
        out=np.zeros_like(variance),
        where=variance > 0,
    )
    naive = float(np.mean((z > 1.959963984540054).any(axis=1)))
    return ours / SIMULATIONS, naive


def test_a_a_comparisons_read_fifty_times_keep_false_verdicts_at_alpha() -> None:
    rng = np.random.default_rng(20261202)
    ours, naive = false_verdict_rates(
        cumulative_successes(rng, 0.5), cumulative_successes(rng, 0.5)
    )
    allowed = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / SIMULATIONS)
    assert ours <= allowed, f"confidence sequence: {ours:.3f} false verdicts"
    # Peeking fifty times at a fixed-horizon test: several times alpha.
    assert naive > 3 * ALPHA, f"naive z-test: {naive:.3f} false verdicts"


def test_a_real_difference_is_detected() -> None:
    rng = np.random.default_rng(7)
    control = cumulative_successes(rng, 0.60)[:200]
    candidate = cumulative_successes(rng, 0.75)[:200]
    detected = sum(
        compare_means(
            Sample.proportion(int(first[-1]), LOOKS * STEP),
            Sample.proportion(int(second[-1]), LOOKS * STEP),
        ).low
        > 0
        for first, second in zip(control, candidate, strict=True)
    )
    assert detected / 200 >= 0.95


def test_the_sequence_is_growthbooks_formula() -> None:
    control = Sample.proportion(124, 190)
    candidate = Sample.proportion(200, 210)
    result = compare_means(control, candidate, alpha=0.05, tuning=1000)
    # By hand: rho^2 = (-2 ln a + ln(-2 ln a + 1)) / tuning; N = 400.
    rho_squared = (-2 * math.log(0.05) + math.log(-2 * math.log(0.05) + 1)) / 1000
    variance = (124 / 190) * (66 / 190) / 190 + (200 / 210) * (10 / 210) / 210
    total = 400
    half = math.sqrt(total * variance) * math.sqrt(
        2
        * (total * rho_squared + 1)
        / (total**2 * rho_squared)
        * math.log(math.sqrt(total * rho_squared + 1) / 0.05)
    )
    assert tuning_rho(0.05, 1000) ** 2 == pytest.approx(rho_squared, rel=1e-12)
    assert result.difference == pytest.approx(200 / 210 - 124 / 190, rel=1e-12)
    assert (result.low, result.high) == pytest.approx(
        (result.difference - half, result.difference + half), rel=1e-12
    )
    assert result.settled and result.p_value < 0.05


def test_the_p_value_is_below_alpha_exactly_when_the_sequence_excludes_zero() -> None:
    rng = np.random.default_rng(3)
    agreements = 0
    for _ in range(300):
        n_control, n_candidate = rng.integers(30, 3000, size=2)
        control = Sample.proportion(int(rng.binomial(n_control, 0.5)), int(n_control))
        candidate = Sample.proportion(
            int(rng.binomial(n_candidate, 0.53)), int(n_candidate)
        )
        result = compare_means(control, candidate)
        agreements += result.settled == (result.p_value < ALPHA)
    assert agreements == 300


def test_zero_variance_and_refusals() -> None:
    same = compare_means(Sample.proportion(10, 10), Sample.proportion(20, 20))
    assert (same.difference, same.low, same.high, same.p_value) == (0, 0, 0, 1.0)
    with pytest.raises(ValueError, match="3 successes in 2 observations"):
        Sample.proportion(3, 2)
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        compare_means(Sample.of([1.0]), Sample.of([2.0]), alpha=1.5)
    with pytest.raises(ValueError, match="no sample settles a difference of 0"):
        required_per_version(0.25, 0.25, 0.0)


@pytest.mark.parametrize("difference", [0.01, 0.05, 0.2])
def test_the_sample_size_is_where_the_sequence_becomes_narrow_enough(
    difference: float,
) -> None:
    needed = required_per_version(0.25, 0.21, difference)
    assert half_width(0.46 / needed, 2 * needed) <= difference
    assert half_width(0.46 / (needed - 1), 2 * (needed - 1)) > difference


def test_a_split_as_configured_is_not_blocked() -> None:
    check = sample_ratio_check({"1": 9031, "2": 969}, {"1": 90, "2": 10})
    expected = chisquare([9031, 969], [9000, 1000])
    assert check.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert check.p_value == pytest.approx(expected.pvalue, rel=1e-6)
    assert not check.blocked and check.reason is None
    assert 0 < check.sequential_p_value <= 1


def test_a_mismatched_split_blocks_and_says_why() -> None:
    check = sample_ratio_check({"1": 5000, "2": 5400}, {"1": 50, "2": 50})
    assert check.p_value == pytest.approx(chisquare([5000, 5400]).pvalue, rel=1e-6)
    assert check.blocked
    assert check.reason == (
        "sample ratio mismatch: observed 1: 5000 (48.1% for 50.0%), "
        "2: 5400 (51.9% for 50.0%); p = 8.8e-05 < 0.001, "
        "so routing or logging is broken and no verdict is given"
    )
    assert check.to_json()["blocked"] is True


def test_the_sequential_srm_test_can_be_the_one_that_blocks() -> None:
    counts, weights = {"1": 5000, "2": 5400}, {"1": 50.0, "2": 50.0}
    sequential = sample_ratio_check(counts, weights, blocking="sequential")
    # The Bayes factor asks for more evidence than one chi-square look.
    assert sequential.sequential_p_value > sequential.p_value
    assert sequential.blocked == (sequential.sequential_p_value < 0.001)
    lopsided = sample_ratio_check(
        {"1": 5000, "2": 6000}, weights, blocking="sequential"
    )
    assert lopsided.blocked and lopsided.sequential_p_value < 0.001


def test_a_version_with_no_weight_that_answered_blocks() -> None:
    check = sample_ratio_check({"1": 100, "3": 4}, {"1": 100, "2": 0})
    assert check.blocked
    assert check.reason == (
        "sample ratio mismatch: version 3 has weight 0 but answered 4 of 104 requests"
    )
    assert check.to_json()["statistic"] is None
    with pytest.raises(ValueError, match="no version has a positive weight"):
        sample_ratio_check({"1": 3}, {"1": 0})
