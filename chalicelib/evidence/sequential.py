"""Comparisons of two versions that stay valid however often they are read (pure).

A fixed-horizon test (a z-test, a chi-square test) promises its false-positive
rate for one look at a sample size fixed in advance. A report read every minute
looks hundreds of times and stops at the first "significant" look, so its false
verdicts pile up (the A/A test in ``tests/unit/test_evidence_sequential.py``
measures it). The figures here are anytime-valid instead:

- ``compare_means``: the asymptotic confidence sequence of Waudby-Smith et al.
  (2023, "Time-uniform central limit theory and asymptotic confidence
  sequences"), as GrowthBook uses it, for the difference of two means (a
  proportion is a mean of 0s and 1s). With N observations in all and the
  estimate's variance v, its half-width is
  ``sqrt(N v) * sqrt(2 (N rho^2 + 1) / (N^2 rho^2) * ln(sqrt(N rho^2 + 1) / alpha))``,
  where ``rho`` makes it narrowest at N = ``tuning``. It covers the true
  difference at every N at once with probability 1 - alpha (asymptotically).
- Its p-value is the mixture SPRT's (Johari et al., 2017, "Peeking at A/B tests"):
  ``1 / Lambda`` with the normal mixture of variance ``tau^2 = rho^2 N v``, which
  is the same mixture, so p < alpha exactly when the sequence excludes 0. The
  smallest p-value seen so far is also valid (carry it with ``min``).
- ``sample_ratio_check``: observed counts against configured weights. Pearson's
  chi-square blocks below p = 0.001; it is a one-look test, so it also reports
  the sequential p-value of the Dirichlet-multinomial Bayes factor (Lindon and
  Malek, 2022, prior: the configured split with the weight of 100 requests),
  which an evaluator that checks every minute (a rollout) should block on instead:
  pass ``blocking="sequential"``.
- ``required_per_version``: how many observations per version would make the
  sequence narrower than a difference, so an observed difference that large
  would be settled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from chalicelib.evidence.pvalues import chi2_sf

DEFAULT_ALPHA = 0.05
DEFAULT_TUNING = 1000
SRM_THRESHOLD = 0.001
SRM_PRIOR_WEIGHT = 100.0
_LARGEST_SAMPLE = 10**12


@dataclass(frozen=True)
class Sample:
    """One version's observations of a metric: how many, their mean and variance."""

    count: int
    mean: float
    variance: float

    @classmethod
    def proportion(cls, successes: int, count: int) -> Sample:
        """``successes`` out of ``count`` 0/1 outcomes (count > 0)."""
        if not 0 <= successes <= count or count == 0:
            raise ValueError(f"{successes} successes in {count} observations")
        share = successes / count
        return cls(count, share, share * (1 - share))

    @classmethod
    def of(cls, values: npt.ArrayLike) -> Sample:
        """The count, mean and (population) variance of some numbers (at least one)."""
        array = np.asarray(values, dtype=np.float64).ravel()
        if array.size == 0:
            raise ValueError("a sample needs at least one value")
        return cls(int(array.size), float(array.mean()), float(array.var()))


@dataclass(frozen=True)
class Difference:
    """``candidate - control`` with its confidence sequence and always-valid p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    alpha: float

    @property
    def settled(self) -> bool:
        """Whether the sequence excludes 0 (equivalently, p < alpha)."""
        return self.low > 0 or self.high < 0


def tuning_rho(alpha: float, tuning: int) -> float:
    """The mixture's rho that makes the sequence narrowest at N = ``tuning``."""
    log_term = -2 * math.log(alpha)
    return math.sqrt((log_term + math.log(log_term + 1)) / tuning)


def half_width(
    estimate_variance: float,
    total: int,
    alpha: float = DEFAULT_ALPHA,
    tuning: int = DEFAULT_TUNING,
) -> float:
    """The confidence sequence's half-width for an estimate of variance ``v`` at N."""
    rho_squared = tuning_rho(alpha, tuning) ** 2
    spread = total * rho_squared + 1
    return math.sqrt(total * estimate_variance) * math.sqrt(
        2 * spread / (total * total * rho_squared) * math.log(math.sqrt(spread) / alpha)
    )


def compare_means(
    control: Sample,
    candidate: Sample,
    alpha: float = DEFAULT_ALPHA,
    tuning: int = DEFAULT_TUNING,
) -> Difference:
    """The difference of the candidate's mean over the control's (see the module)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    if control.count < 1 or candidate.count < 1:
        raise ValueError("each version needs at least one observation")
    difference = candidate.mean - control.mean
    variance = control.variance / control.count + candidate.variance / candidate.count
    total = control.count + candidate.count
    if variance <= 0:
        return Difference(
            difference, difference, difference, float(difference == 0), alpha
        )
    half = half_width(variance, total, alpha, tuning)
    spread = total * tuning_rho(alpha, tuning) ** 2
    log_p = 0.5 * math.log1p(spread) - spread * difference**2 / (
        2 * variance * (1 + spread)
    )
    return Difference(
        difference,
        difference - half,
        difference + half,
        min(1.0, math.exp(log_p)),
        alpha,
    )


def required_per_version(
    control_variance: float,
    candidate_variance: float,
    difference: float,
    alpha: float = DEFAULT_ALPHA,
    tuning: int = DEFAULT_TUNING,
) -> int:
    """The observations per version at which the sequence's half-width is at most
    ``|difference|`` (so a difference that large, observed, is settled).

    Raises ValueError for a zero difference.
    """
    if difference == 0:
        raise ValueError("no sample settles a difference of 0")
    variance_sum = control_variance + candidate_variance
    if variance_sum <= 0:
        return 1

    def narrow_enough(per_version: int) -> bool:
        width = half_width(variance_sum / per_version, 2 * per_version, alpha, tuning)
        return width <= abs(difference)

    high = 1
    while not narrow_enough(high):
        if high > _LARGEST_SAMPLE:
            return high
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if narrow_enough(middle) else (middle, high)
    return high


@dataclass(frozen=True)
class SampleRatioCheck:
    """Observed counts per version against configured weights."""

    counts: dict[str, int]
    expected_shares: dict[str, float]
    statistic: float
    p_value: float
    sequential_p_value: float
    blocked: bool
    reason: str | None

    def to_json(self) -> dict[str, object]:
        """The report's ``srm`` object (an infinite statistic is written as null)."""
        return {
            "counts": self.counts,
            "expected_shares": self.expected_shares,
            "statistic": self.statistic if math.isfinite(self.statistic) else None,
            "p_value": self.p_value,
            "sequential_p_value": self.sequential_p_value,
            "blocked": self.blocked,
            "reason": self.reason,
        }


def sample_ratio_check(
    counts: Mapping[str, int],
    weights: Mapping[str, float],
    threshold: float = SRM_THRESHOLD,
    blocking: Literal["chi-square", "sequential"] = "chi-square",
) -> SampleRatioCheck:
    """Whether the traffic split is what the weights configure.

    ``counts`` and ``weights`` are keyed by version (a version missing from one
    counts as 0 there). Blocked, with the reason in words, when a version with
    weight 0 answered or the chosen test's p-value is below ``threshold``.
    Raises ValueError when no weight is positive.
    """
    versions = sorted(set(counts) | set(weights), key=_version_order)
    total_weight = sum(max(0.0, weights.get(version, 0.0)) for version in versions)
    if total_weight <= 0:
        raise ValueError("no version has a positive weight")
    observed = {version: int(counts.get(version, 0)) for version in versions}
    shares = {
        version: max(0.0, weights.get(version, 0.0)) / total_weight
        for version in versions
    }
    total = sum(observed.values())
    stray = [
        version for version in versions if shares[version] == 0 and observed[version]
    ]
    if stray:
        stray_reason = (
            f"sample ratio mismatch: version {stray[0]} has weight 0 but answered "
            f"{observed[stray[0]]} of {total} requests"
        )
        return SampleRatioCheck(
            observed, shares, math.inf, 0.0, 0.0, True, stray_reason
        )
    live = [version for version in versions if shares[version] > 0]
    statistic = (
        sum(
            (observed[version] - total * shares[version]) ** 2
            / (total * shares[version])
            for version in live
        )
        if total
        else 0.0
    )
    p_value = chi2_sf(statistic, len(live) - 1) if len(live) > 1 else 1.0
    sequential = _multinomial_sequential_p(
        [observed[version] for version in live], [shares[version] for version in live]
    )
    deciding = p_value if blocking == "chi-square" else sequential
    blocked = deciding < threshold
    reason: str | None = None
    if blocked:
        observed_text = ", ".join(
            f"{version}: {observed[version]} ({observed[version] / total:.1%} "
            f"for {shares[version]:.1%})"
            for version in live
        )
        reason = (
            f"sample ratio mismatch: observed {observed_text}; p = {deciding:.2g} "
            f"< {threshold:g}, so routing or logging is broken and no verdict is given"
        )
    return SampleRatioCheck(
        observed, shares, statistic, p_value, sequential, blocked, reason
    )


def _multinomial_sequential_p(counts: list[int], shares: list[float]) -> float:
    if len(counts) < 2:
        return 1.0
    prior = [SRM_PRIOR_WEIGHT * share for share in shares]
    log_factor = (
        math.lgamma(sum(prior))
        - math.lgamma(sum(prior) + sum(counts))
        + sum(
            math.lgamma(a + x) - math.lgamma(a)
            for a, x in zip(prior, counts, strict=True)
        )
        - sum(x * math.log(share) for x, share in zip(counts, shares, strict=True))
    )
    return min(1.0, math.exp(-log_factor)) if log_factor > -700 else 1.0


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)
