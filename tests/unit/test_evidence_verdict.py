"""Verdicts in words and shadows on identical inputs (chalicelib.evidence.verdict),
McNemar's test against scipy."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest, chi2

from chalicelib.evidence.scores import Estimate
from chalicelib.evidence.sequential import (
    Sample,
    required_per_version,
    sample_ratio_check,
)
from chalicelib.evidence.verdict import (
    compare_versions,
    mcnemar,
    shadow_agreement,
    shadow_score_difference,
)


def test_a_settled_difference_is_said_in_words() -> None:
    comparison = compare_versions(
        "accuracy", "2", Sample.proportion(200, 210), "1", Sample.proportion(118, 190)
    )
    assert comparison.outcome == "ahead"
    assert comparison.verdict == (
        "version 2 is ahead on accuracy: 0.95 against 0.62 (difference 0.33, "
        "95% confidence sequence 0.21 to 0.45; 210 and 190 labelled)"
    )
    assert comparison.to_json() == {
        "version": "2",
        "control": "1",
        "metric": "accuracy",
        "difference": pytest.approx(200 / 210 - 118 / 190),
        "low": pytest.approx(0.2122, abs=1e-4),
        "high": pytest.approx(0.4505, abs=1e-4),
        "p_value": pytest.approx(7.05e-13, rel=1e-2),
        "verdict": comparison.verdict,
    }


def test_behind_and_lower_is_better() -> None:
    behind = compare_versions(
        "accuracy", "2", Sample.proportion(118, 190), "1", Sample.proportion(200, 210)
    )
    assert behind.outcome == "behind"
    assert behind.verdict.startswith("version 2 is behind on accuracy: 0.62 against")
    mae = compare_versions(
        "mae",
        "3",
        Sample(300, 0.31, 0.04),
        "1",
        Sample(280, 0.45, 0.05),
        higher_is_better=False,
    )
    assert mae.verdict == (
        "version 3 is ahead on mae: 0.31 against 0.45 (difference -0.14, "
        "95% confidence sequence -0.19 to -0.086; 300 and 280 labelled)"
    )


def test_an_open_question_says_how_much_more_would_settle_it() -> None:
    candidate, control = Sample.proportion(70, 100), Sample.proportion(66, 100)
    comparison = compare_versions("accuracy", "2", candidate, "1", control)
    needed = required_per_version(control.variance, candidate.variance, 0.04)
    assert comparison.outcome == "undecided"
    assert comparison.more_needed == needed - 100
    assert comparison.verdict == (
        f"not enough evidence yet: about {needed - 100} more labelled requests per "
        "version would settle a difference of 0.04"
    )


def test_a_tiny_difference_is_sized_at_the_minimum_effect() -> None:
    comparison = compare_versions(
        "accuracy", "2", Sample.proportion(500, 1000), "1", Sample.proportion(501, 1000)
    )
    assert comparison.verdict.endswith("would settle a difference of 0.02")


def test_too_few_labels_give_no_verdict_even_when_the_sequence_excludes_zero() -> None:
    comparison = compare_versions(
        "accuracy", "2", Sample.proportion(20, 20), "1", Sample.proportion(0, 20)
    )
    assert comparison.low is not None and comparison.low > 0
    assert (comparison.outcome, comparison.more_needed) == ("undecided", 10)


def test_a_sample_ratio_mismatch_blocks_the_verdict() -> None:
    srm = sample_ratio_check({"1": 5000, "2": 5400}, {"1": 50, "2": 50})
    comparison = compare_versions(
        "accuracy",
        "2",
        Sample.proportion(200, 210),
        "1",
        Sample.proportion(118, 190),
        srm=srm,
    )
    assert comparison.outcome == "blocked"
    assert comparison.verdict == f"no verdict: {srm.reason}"
    assert comparison.to_json()["difference"] is None


@pytest.mark.parametrize(
    ("primary_only", "shadow_only"), [(0, 0), (3, 9), (12, 12), (2, 22)]
)
def test_small_discordant_counts_use_the_exact_binomial(
    primary_only: int, shadow_only: int
) -> None:
    test = mcnemar(primary_only, shadow_only)
    total = primary_only + shadow_only
    expected = binomtest(primary_only, total, 0.5).pvalue if total else 1.0
    assert test.method == "exact" and test.statistic is None
    assert test.p_value == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("primary_only", "shadow_only"), [(13, 12), (40, 20), (5, 95)])
def test_larger_discordant_counts_use_corrected_chi_square(
    primary_only: int, shadow_only: int
) -> None:
    test = mcnemar(primary_only, shadow_only)
    statistic = (abs(primary_only - shadow_only) - 1) ** 2 / (
        primary_only + shadow_only
    )
    assert test.method == "chi-square"
    assert test.statistic == pytest.approx(statistic, rel=1e-12)
    assert test.p_value == pytest.approx(chi2.sf(statistic, 1), rel=1e-6)


def test_shadow_agreement_on_identical_inputs() -> None:
    agreement = shadow_agreement(
        ["a", "a", "b", "b", "c"],
        ["a", "b", "b", "b", "a"],
        labels=["a", "b", "b", "a", "c"],
    )
    assert agreement.count == 5
    assert agreement.agreement.value == 0.6
    assert agreement.classes == ("a", "b", "c")
    assert agreement.disagreement == ((1, 1, 0), (0, 2, 0), (1, 0, 0))
    # Only the shadow is right on the second pair, only the primary on the fifth.
    assert agreement.mcnemar is not None
    assert (agreement.mcnemar.primary_only, agreement.mcnemar.shadow_only) == (1, 1)


def test_shadow_agreement_without_labels_and_refusals() -> None:
    agreement = shadow_agreement([1, 2], [1, 2])
    assert agreement.mcnemar is None and agreement.agreement.value == 1.0
    empty = shadow_agreement([], [])
    assert math.isnan(empty.agreement.value)
    with pytest.raises(ValueError, match="2 primary and 1 shadow predictions"):
        shadow_agreement([1, 2], [1])
    with pytest.raises(ValueError, match="1 labels for 2 predictions"):
        shadow_agreement([1, 2], [1, 2], labels=[1])


def test_shadow_score_difference() -> None:
    difference = shadow_score_difference([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert difference == Estimate(0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="2 primary and 1 shadow outputs"):
        shadow_score_difference([1.0, 2.0], [1.0])
