"""Verdicts in words, and shadows compared on identical inputs (pure).

``compare_versions`` turns two versions' samples of a metric into the report's
comparison: the difference with its confidence sequence and always-valid
p-value (``sequential.compare_means``) and one sentence, such as

    version 2 is ahead on accuracy: 0.95 against 0.62 (difference 0.33, 95%
    confidence sequence 0.25 to 0.41; 210 and 190 labelled)

or ``not enough evidence yet: about N more labelled requests per version would
settle a difference of X``. A blocked sample-ratio check replaces the verdict
with its reason: when the split is wrong, the comparison is not of like with like.

``shadow_agreement`` compares a primary's and its shadow's predictions on the
same inputs: the agreement rate (Wilson interval), the disagreement matrix and,
with labels, McNemar's test on the pairs only one of the two got right (exact
binomial below 25 such pairs, chi-square with continuity correction from 25).
For regressors, ``shadow_score_difference`` is the mean of shadow minus primary
with its interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.evidence.baseline import Column
from chalicelib.evidence.pvalues import binomial_half_two_sided, chi2_sf
from chalicelib.evidence.scores import (
    Estimate,
    as_labels,
    mean_interval,
    wilson_interval,
)
from chalicelib.evidence.sequential import (
    DEFAULT_ALPHA,
    DEFAULT_TUNING,
    Difference,
    Sample,
    SampleRatioCheck,
    compare_means,
    required_per_version,
)

MIN_PER_VERSION = 30
MIN_EFFECT = 0.02
MCNEMAR_EXACT_BELOW = 25


@dataclass(frozen=True)
class Comparison:
    """One version against the control on one metric, and the verdict in words.

    ``outcome`` is "ahead", "behind", "undecided" or "blocked"; ``more_needed``
    is the estimate of labelled requests per version still missing when undecided.
    """

    version: str
    control: str
    metric: str
    control_value: float
    candidate_value: float
    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    outcome: str
    verdict: str
    more_needed: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The report's ``comparisons`` entry."""
        return {
            "version": self.version,
            "control": self.control,
            "metric": self.metric,
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "p_value": self.p_value,
            "verdict": self.verdict,
        }


def compare_versions(
    metric: str,
    version: str,
    candidate: Sample,
    control: str,
    control_sample: Sample,
    *,
    higher_is_better: bool = True,
    srm: SampleRatioCheck | None = None,
    alpha: float = DEFAULT_ALPHA,
    tuning: int = DEFAULT_TUNING,
    min_per_version: int = MIN_PER_VERSION,
    min_effect: float = MIN_EFFECT,
) -> Comparison:
    """The verdict on ``version`` against ``control`` for ``metric``.

    No verdict while the sample-ratio check blocks; "not enough evidence yet"
    below ``min_per_version`` labelled per version or while the confidence
    sequence holds 0, with the estimate of how many more labelled requests per
    version would settle a difference of ``max(|observed|, min_effect)``.
    """

    def judged(
        outcome: str, verdict: str, more_needed: int | None = None
    ) -> Comparison:
        return Comparison(
            version=version,
            control=control,
            metric=metric,
            control_value=control_sample.mean,
            candidate_value=candidate.mean,
            difference=None if result is None else result.difference,
            low=None if result is None else result.low,
            high=None if result is None else result.high,
            p_value=None if result is None else result.p_value,
            outcome=outcome,
            verdict=verdict,
            more_needed=more_needed,
        )

    result: Difference | None = None
    if srm is not None and srm.blocked:
        return judged("blocked", f"no verdict: {srm.reason or 'sample ratio mismatch'}")
    result = compare_means(control_sample, candidate, alpha, tuning)
    counts = min(candidate.count, control_sample.count)
    if result.settled and counts >= min_per_version:
        outcome = "ahead" if (result.difference > 0) == higher_is_better else "behind"
        return judged(
            outcome,
            f"version {version} is {outcome} on {metric}: "
            f"{_figure(candidate.mean)} against {_figure(control_sample.mean)} "
            f"(difference {_figure(result.difference)}, "
            f"{1 - alpha:.0%} confidence sequence {_figure(result.low)} to "
            f"{_figure(result.high)}; {candidate.count} and {control_sample.count} "
            "labelled)",
        )
    effect = max(abs(result.difference), min_effect)
    needed = required_per_version(
        control_sample.variance, candidate.variance, effect, alpha, tuning
    )
    more = max(1, max(min_per_version, needed) - counts)
    return judged(
        "undecided",
        f"not enough evidence yet: about {more} more labelled requests per "
        f"version would settle a difference of {_figure(effect)}",
        more,
    )


def _figure(value: float) -> str:
    """Two decimals, or two significant digits for small non-zero figures."""
    return f"{value:.2g}" if 0 < abs(value) < 0.1 else f"{value:.2f}"


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on the pairs where only one of two classifiers was right."""

    primary_only: int
    shadow_only: int
    method: str
    statistic: float | None
    p_value: float


def mcnemar(
    primary_only: int, shadow_only: int, exact_below: int = MCNEMAR_EXACT_BELOW
) -> McNemar:
    """McNemar's test from the two discordant counts.

    Exact (two-sided binomial, p = 1/2) when they add up to less than
    ``exact_below``; otherwise ``(|b - c| - 1)^2 / (b + c)`` against chi-square
    with one degree of freedom.
    """
    discordant = primary_only + shadow_only
    if discordant < exact_below:
        return McNemar(
            primary_only,
            shadow_only,
            "exact",
            None,
            binomial_half_two_sided(primary_only, discordant),
        )
    statistic = (abs(primary_only - shadow_only) - 1) ** 2 / discordant
    return McNemar(
        primary_only, shadow_only, "chi-square", statistic, chi2_sf(statistic, 1)
    )


@dataclass(frozen=True)
class ShadowAgreement:
    """A primary and its shadow on the same inputs.

    ``disagreement`` counts pairs per (primary class, shadow class), rows the
    primary's; the diagonal is where they agree.
    """

    count: int
    agreement: Estimate
    classes: tuple[str, ...]
    disagreement: tuple[tuple[int, ...], ...]
    mcnemar: McNemar | None


def shadow_agreement(
    primary: Column,
    shadow: Column,
    labels: Column | None = None,
    confidence: float = 0.95,
) -> ShadowAgreement:
    """Agreement of aligned primary and shadow predictions (compared as text).

    With ``labels`` (aligned too), McNemar's test of which one is right more
    often. Raises ValueError when the lengths differ.
    """
    first = as_labels(primary)
    second = as_labels(shadow)
    if first.shape != second.shape:
        raise ValueError(f"{first.size} primary and {second.size} shadow predictions")
    classes, codes = np.unique(np.concatenate([first, second]), return_inverse=True)
    size = len(classes)
    matrix = np.bincount(
        codes[: first.size] * size + codes[first.size :], minlength=size * size
    ).reshape(size, size)
    agreeing = int(np.trace(matrix))
    test = None
    if labels is not None:
        truth = as_labels(labels)
        if truth.shape != first.shape:
            raise ValueError(f"{truth.size} labels for {first.size} predictions")
        primary_right = first == truth
        shadow_right = second == truth
        test = mcnemar(
            int(np.sum(primary_right & ~shadow_right)),
            int(np.sum(shadow_right & ~primary_right)),
        )
    return ShadowAgreement(
        count=int(first.size),
        agreement=wilson_interval(agreeing, int(first.size), confidence)
        if first.size
        else Estimate(math.nan, 0.0, 1.0),
        classes=tuple(str(name) for name in classes),
        disagreement=tuple(tuple(int(cell) for cell in row) for row in matrix),
        mcnemar=test,
    )


def shadow_score_difference(
    primary: Column, shadow: Column, confidence: float = 0.95
) -> Estimate:
    """The mean of ``shadow - primary`` over aligned numeric outputs, with its
    normal-approximation interval. Raises ValueError on different lengths."""
    first = np.asarray(primary, dtype=np.float64).ravel()
    second = np.asarray(shadow, dtype=np.float64).ravel()
    if first.shape != second.shape:
        raise ValueError(f"{first.size} primary and {second.size} shadow outputs")
    return mean_interval(second - first, confidence)
