"""One evaluation of a rollout's step: the figures in, a decision out (pure).

The target is compared with the versions it replaces (pooled: "the others")
over the step's window, guardrail by guardrail:

- ``error_rate`` (errors are the ServerErrors and ClientErrors the metrics
  count, as ``turnout metrics`` counts them): two anytime-valid tests on
  counts, so that reading them every minute does not inflate false alarms.
  *Against the others*: when both error alike, each error lands on the target
  with the probability of its configured share ``q``; the beta-binomial Bayes
  factor of the errors' split (prior Beta with mean ``q`` and weight
  ``PRIOR_WEIGHT``) against that null gives the p-value ``min(1, 1/BF)``,
  one-sided (only more errors on the target counts). It is the two-version case
  of the sample-ratio check's Dirichlet-multinomial factor
  (``chalicelib.evidence.sequential``). *Against the limit*: the same factor on
  the target's errors among its requests, with null ``max_error_rate``.
  Either p-value below ``alpha`` is a regression; the target's observed rate
  over the limit without that evidence is thin evidence, never a pass.
- ``latency_p99``: the target's p99 against ``max_p99_ms``, and
  ``latency_ratio``: its median over the others' against ``max_latency_ratio``.
  Both are thresholds on aggregates the metrics source computed (it says where
  they come from: CloudWatch percentiles on AWS, per-minute averages and
  maxima on moto) once the target has its minimum sample.
- ``accuracy`` (when labels arrived for both sides): the difference of the
  proportions correct with ``compare_means``' confidence sequence; settled
  worse is a regression. Labels never hold a step.
- The sample-ratio check (sequential) on the step's configured split: a
  mismatch means routing or metrics are broken, not the model, so the rollout
  stops rather than judge.

Then: a regression or broken threshold rolls back at once; a step whose
interval is over advances when every guardrail has its sample and passes;
anything else holds, saying what is missing, until the step's timeout, and
then rolls back because it ran out of time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from chalicelib.evidence.sequential import (
    DEFAULT_ALPHA,
    Sample,
    compare_means,
    sample_ratio_check,
)
from chalicelib.rollout.plan import Guardrails

ADVANCE = "advance"
HOLD = "hold"
ROLL_BACK = "roll_back"
STOP = "stop"

# The prior's weight, in observations, of the beta-binomial test on errors:
# light, so that a few errors can be evidence when errors are rare.
PRIOR_WEIGHT = 10.0

OK = "ok"
THIN = "thin"
BROKEN = "broken"
UNCHECKED = "unchecked"


@dataclass(frozen=True)
class VersionFigures:
    """One version's figures over a step's window; None where not measured.

    ``latency_source`` says how the latency figures were computed."""

    version: int
    requests: int
    errors: int
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_source: str = "CloudWatch percentiles"
    labelled: int = 0
    correct: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail's figures against its threshold, its test and its state
    (ok, thin, broken or unchecked)."""

    name: str
    status: str
    value: float | None
    others: float | None
    threshold: float | None
    statistic: float | None = None
    p_value: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    """What one evaluation decided and why, with everything it was decided on."""

    action: str
    reason: str
    guardrails: tuple[GuardrailResult, ...]
    srm: dict[str, Any]
    more_requests: int
    figures: tuple[VersionFigures, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "guardrails": [asdict(result) for result in self.guardrails],
            "srm": self.srm,
            "more_requests": self.more_requests,
            "figures": [figures.to_dict() for figures in self.figures],
        }


def beta_binomial_p(successes: int, trials: int, null_share: float) -> float:
    """The one-sided anytime-valid p-value that ``successes`` of ``trials`` are
    more than ``null_share`` of them: ``min(1, 1/BF)`` with the beta-binomial
    Bayes factor (prior mean ``null_share``, weight ``PRIOR_WEIGHT``)."""
    if trials <= 0 or successes <= trials * null_share:
        return 1.0
    if null_share <= 0:
        return 0.0
    if null_share >= 1:
        return 1.0
    a, b = PRIOR_WEIGHT * null_share, PRIOR_WEIGHT * (1 - null_share)
    failures = trials - successes
    log_factor = (
        _log_beta(a + successes, b + failures)
        - _log_beta(a, b)
        - successes * math.log(null_share)
        - failures * math.log1p(-null_share)
    )
    return 1.0 if log_factor <= 0 else math.exp(-min(log_factor, 700.0))


def judge(
    target: int,
    weights: Mapping[int, float],
    figures: Mapping[int, VersionFigures],
    guardrails: Guardrails,
    *,
    step_seconds: float,
    interval_seconds: float,
    timeout_seconds: float,
    alpha: float = DEFAULT_ALPHA,
) -> Decision:
    """The decision on a step ``step_seconds`` old whose alias routes by
    ``weights``, from each version's ``figures`` over the step (a version
    missing there had no traffic)."""
    mine = figures.get(target) or VersionFigures(target, 0, 0)
    others = [
        figures.get(version) or VersionFigures(version, 0, 0)
        for version in sorted(weights)
        if version != target
    ]
    share = max(0.0, weights.get(target, 0.0)) / sum(
        max(0.0, w) for w in weights.values()
    )
    counts = {str(f.version): f.requests for f in (mine, *others)}
    srm = sample_ratio_check(
        counts, {str(v): float(w) for v, w in weights.items()}, blocking="sequential"
    )
    results = (
        _error_rate(mine, others, share, guardrails, alpha),
        _p99(mine, guardrails),
        _latency_ratio(mine, others, guardrails),
        _accuracy(mine, others, alpha),
    )
    more = max(0, guardrails.min_requests - mine.requests)
    all_figures = (mine, *others)

    def decided(action: str, reason: str) -> Decision:
        return Decision(action, reason, results, srm.to_json(), more, all_figures)

    if srm.blocked:
        return decided(STOP, str(srm.reason))
    broken = [result for result in results if result.status == BROKEN]
    if broken:
        return decided(ROLL_BACK, "; ".join(result.detail for result in broken))
    thin = [result for result in results if result.status == THIN]
    if thin:
        missing = "; ".join(result.detail for result in thin)
        if step_seconds >= timeout_seconds:
            return decided(
                ROLL_BACK,
                f"ran out of time: the step lasted {_minutes(step_seconds)} "
                f"(timeout {_minutes(timeout_seconds)}) and the evidence is still "
                f"thin: {missing}",
            )
        return decided(HOLD, f"evidence is thin: {missing}")
    if step_seconds < interval_seconds:
        return decided(
            HOLD,
            f"every guardrail passes; the step's interval ends in "
            f"{_minutes(interval_seconds - step_seconds)}",
        )
    return decided(
        ADVANCE,
        f"every guardrail passes on {mine.requests} requests to version {target}",
    )


def _error_rate(
    mine: VersionFigures,
    others: list[VersionFigures],
    share: float,
    rails: Guardrails,
    alpha: float,
) -> GuardrailResult:
    other_requests = sum(f.requests for f in others)
    other_errors = sum(f.errors for f in others)
    rate = mine.errors / mine.requests if mine.requests else None
    other_rate = other_errors / other_requests if other_requests else None
    relative_p = beta_binomial_p(mine.errors, mine.errors + other_errors, share)
    limit_p = beta_binomial_p(mine.errors, mine.requests, rails.max_error_rate)
    p_value = min(relative_p, limit_p)
    statistic = max(0.0, -math.log(p_value)) if p_value > 0 else math.inf
    described = (
        f"error rate {_percent(rate)} on {mine.requests} requests against "
        f"{_percent(other_rate)} on {other_requests} for the others "
        f"(limit {_percent(rails.max_error_rate)})"
    )

    def result(status: str, detail: str) -> GuardrailResult:
        return GuardrailResult(
            "error_rate",
            status,
            rate,
            other_rate,
            rails.max_error_rate,
            statistic if math.isfinite(statistic) else None,
            p_value,
            detail,
        )

    if limit_p < alpha:
        return result(
            BROKEN,
            f"{described}: over the limit, p = {limit_p:.2g} < {alpha:g}",
        )
    if relative_p < alpha:
        return result(
            BROKEN,
            f"{described}: worse than the others, p = {relative_p:.2g} < {alpha:g}",
        )
    if mine.requests < rails.min_requests:
        return result(
            THIN,
            f"{mine.requests} of the {rails.min_requests} requests a step needs "
            f"({rails.min_requests - mine.requests} more)",
        )
    if rate is not None and rate > rails.max_error_rate:
        return result(
            THIN,
            f"{described}: over the limit but not conclusively yet (p = {limit_p:.2g})",
        )
    return result(OK, described)


def _p99(mine: VersionFigures, rails: Guardrails) -> GuardrailResult:
    p99 = mine.latency_p99_ms
    limit = rails.max_p99_ms

    def result(status: str, detail: str) -> GuardrailResult:
        return GuardrailResult("latency_p99", status, p99, None, limit, detail=detail)

    if limit is None:
        return result(UNCHECKED, "no p99 limit")
    if p99 is None or mine.requests < rails.min_requests:
        return result(THIN, f"p99 needs {rails.min_requests} requests")
    described = f"p99 {p99:.1f} ms ({mine.latency_source}; limit {limit:g} ms)"
    return result(BROKEN if p99 > limit else OK, described)


def _latency_ratio(
    mine: VersionFigures, others: list[VersionFigures], rails: Guardrails
) -> GuardrailResult:
    limit = rails.max_latency_ratio
    measured = [f for f in others if f.latency_p50_ms is not None and f.requests]
    theirs = (
        sum(f.latency_p50_ms or 0.0 for f in measured) / len(measured)
        if measured
        else None
    )
    median = mine.latency_p50_ms
    ratio = median / theirs if median is not None and theirs else None

    def result(status: str, detail: str) -> GuardrailResult:
        return GuardrailResult(
            "latency_ratio", status, median, theirs, limit, ratio, detail=detail
        )

    if limit is None:
        return result(UNCHECKED, "no latency ratio limit")
    if ratio is None or mine.requests < rails.min_requests:
        return result(
            THIN, f"the median ratio needs {rails.min_requests} requests to each side"
        )
    described = (
        f"median latency {median:.1f} ms against {theirs:.1f} ms, ratio "
        f"{ratio:.2f} ({mine.latency_source}; limit {limit:g})"
    )
    return result(BROKEN if ratio > limit else OK, described)


def _accuracy(
    mine: VersionFigures, others: list[VersionFigures], alpha: float
) -> GuardrailResult:
    labelled = sum(f.labelled for f in others)
    correct = sum(f.correct for f in others)
    if not mine.labelled or not labelled:
        return GuardrailResult(
            "accuracy", UNCHECKED, None, None, None, detail="no labels in the step"
        )
    difference = compare_means(
        Sample.proportion(correct, labelled),
        Sample.proportion(mine.correct, mine.labelled),
        alpha,
    )
    accuracy, their_accuracy = mine.correct / mine.labelled, correct / labelled
    described = (
        f"accuracy {_percent(accuracy)} on {mine.labelled} labelled against "
        f"{_percent(their_accuracy)} on {labelled} (difference "
        f"{difference.low:+.3f} to {difference.high:+.3f})"
    )
    worse = difference.high < 0
    return GuardrailResult(
        "accuracy",
        BROKEN if worse else OK,
        accuracy,
        their_accuracy,
        None,
        difference.difference,
        difference.p_value,
        f"{described}: worse, p = {difference.p_value:.2g}" if worse else described,
    )


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
