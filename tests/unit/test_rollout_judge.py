"""The judge of one step: advance, hold, roll back or stop, and why (pure)."""

from __future__ import annotations

import random

import pytest

from chalicelib.rollout.judge import (
    ADVANCE,
    HOLD,
    ROLL_BACK,
    STOP,
    VersionFigures,
    beta_binomial_p,
    judge,
)
from chalicelib.rollout.plan import Guardrails

RAILS = Guardrails(max_error_rate=0.01, max_p99_ms=250, max_latency_ratio=1.5)
WEIGHTS = {1: 75, 2: 25}


def figures(
    target_requests: int = 1000,
    target_errors: int = 2,
    target_p50: float = 10.0,
    target_p99: float = 40.0,
    other_requests: int = 3000,
    other_errors: int = 6,
) -> dict[int, VersionFigures]:
    return {
        1: VersionFigures(1, other_requests, other_errors, 10.0, 40.0),
        2: VersionFigures(2, target_requests, target_errors, target_p50, target_p99),
    }


def decide(found: dict[int, VersionFigures], seconds: float = 300, **changes: float):  # type: ignore[no-untyped-def]
    return judge(
        2,
        WEIGHTS,
        found,
        Guardrails(**{**RAILS.__dict__, **changes}),
        step_seconds=seconds,
        interval_seconds=300,
        timeout_seconds=3600,
    )


def test_a_healthy_step_advances_when_its_interval_is_over() -> None:
    decision = decide(figures())
    assert decision.action == ADVANCE
    assert decision.reason == "every guardrail passes on 1000 requests to version 2"
    assert [g.status for g in decision.guardrails] == ["ok", "ok", "ok", "unchecked"]


def test_a_healthy_step_holds_until_its_interval_is_over() -> None:
    decision = decide(figures(), seconds=120)
    assert decision.action == HOLD
    assert "interval ends in 3 min" in decision.reason


def test_more_errors_than_the_others_roll_back() -> None:
    decision = decide(
        figures(
            target_requests=300, target_errors=10, other_requests=900, other_errors=0
        )
    )
    assert decision.action == ROLL_BACK
    assert "worse than the others" in decision.reason
    error_rate = decision.guardrails[0]
    assert error_rate.p_value is not None and error_rate.p_value < 0.05


def test_errors_over_the_limit_roll_back_even_before_the_minimum_sample() -> None:
    decision = decide(
        figures(
            target_requests=100, target_errors=20, other_requests=300, other_errors=30
        )
    )
    assert decision.action == ROLL_BACK
    assert "over the limit, p = " in decision.reason


def test_a_rate_over_the_limit_without_evidence_holds() -> None:
    decision = decide(
        figures(
            target_requests=300, target_errors=4, other_requests=900, other_errors=12
        )
    )
    assert decision.action == HOLD
    assert "over the limit but not conclusively yet" in decision.reason


def test_a_slow_p99_rolls_back() -> None:
    decision = decide(figures(target_p99=400.0))
    assert decision.action == ROLL_BACK
    assert "p99 400.0 ms" in decision.reason


def test_a_slow_median_rolls_back_on_the_ratio() -> None:
    decision = decide(figures(target_p50=20.0))
    assert decision.action == ROLL_BACK
    assert "ratio 2.00" in decision.reason


def test_too_few_requests_hold_saying_how_many_more() -> None:
    decision = decide(figures(target_requests=150, target_errors=0, other_requests=450))
    assert decision.action == HOLD
    assert decision.more_requests == 50
    assert "150 of the 200 requests a step needs (50 more)" in decision.reason


def test_no_traffic_holds_then_runs_out_of_time() -> None:
    assert decide({}, seconds=600).action == HOLD
    decision = decide({}, seconds=3600)
    assert decision.action == ROLL_BACK
    assert decision.reason.startswith("ran out of time: the step lasted 60 min")


def test_a_sample_ratio_mismatch_stops() -> None:
    decision = decide(figures(target_requests=2000, other_requests=2000))
    assert decision.action == STOP
    assert decision.reason.startswith("sample ratio mismatch")


def test_worse_accuracy_rolls_back() -> None:
    found = figures()
    found[1] = VersionFigures(1, 3000, 6, 10.0, 40.0, labelled=600, correct=570)
    found[2] = VersionFigures(2, 1000, 2, 10.0, 40.0, labelled=200, correct=150)
    decision = decide(found)
    assert decision.action == ROLL_BACK
    assert "accuracy 75.00% on 200 labelled" in decision.reason


def test_the_error_test_stays_valid_when_read_every_minute() -> None:
    """An A/A rollout read 60 times: the false alarms stay under alpha."""
    rng = random.Random(7)
    alarms = 0
    runs = 300
    for _ in range(runs):
        target = others = target_errors = other_errors = 0
        for _ in range(60):
            target += 50
            others += 150
            target_errors += sum(rng.random() < 0.01 for _ in range(50))
            other_errors += sum(rng.random() < 0.01 for _ in range(150))
            if (
                beta_binomial_p(target_errors, target_errors + other_errors, 0.25)
                < 0.05
            ):
                alarms += 1
                break
    assert alarms / runs < 0.05


@pytest.mark.parametrize(
    ("successes", "trials", "share", "expected"),
    [(0, 10, 0.5, 1.0), (5, 10, 0.5, 1.0), (1, 0, 0.5, 1.0), (1, 1, 0.0, 0.0)],
)
def test_beta_binomial_edges(
    successes: int, trials: int, share: float, expected: float
) -> None:
    assert beta_binomial_p(successes, trials, share) == expected
