"""Rollout plans: steps, refusals, weights per step, sticky keys (pure)."""

from __future__ import annotations

import pytest

from chalicelib.errors import InvalidRolloutError
from chalicelib.rollout.plan import (
    COMPLETED,
    PAUSED,
    STEPPING,
    Guardrails,
    Plan,
    Rollout,
    parse_duration,
    parse_percent,
    plan_steps,
    step_weights,
    validate_plan,
)
from chalicelib.traffic import choose_version


def test_steps_from_each_option() -> None:
    assert plan_steps() == (10, 25, 50, 100)
    assert plan_steps(steps="5,50,100") == (5, 50, 100)
    assert plan_steps(canary=10) == (10, 100)
    assert plan_steps(linear=30) == (30, 60, 90, 100)


def test_two_step_options_are_refused() -> None:
    with pytest.raises(InvalidRolloutError, match="give one of --steps"):
        plan_steps(steps="10,100", canary=10)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((10, 5, 100), "steps 10,5,100 must increase"),
        ((10, 10, 100), "steps 10,10,100 must increase"),
        ((10, 50), "steps 10,50 must end at 100"),
        ((0, 100), r"steps 0,100 must each be in \(0, 100\]"),
        ((), "give at least one step"),
    ],
)
def test_bad_steps_are_refused(steps: tuple[float, ...], message: str) -> None:
    with pytest.raises(InvalidRolloutError, match=message):
        validate_plan(Plan(steps=steps), current_share=0)


def test_a_target_already_at_100_percent_is_refused() -> None:
    with pytest.raises(InvalidRolloutError, match="already serves 100 %"):
        validate_plan(Plan(), current_share=100)


def test_a_first_step_below_the_current_share_is_refused() -> None:
    with pytest.raises(InvalidRolloutError, match="must be above the target's"):
        validate_plan(Plan(steps=(10, 100)), current_share=10)


def test_a_timeout_shorter_than_the_interval_is_refused() -> None:
    with pytest.raises(InvalidRolloutError, match="at least one interval"):
        validate_plan(Plan(interval_seconds=600, timeout_seconds=300), current_share=0)


def test_durations_and_percentages() -> None:
    assert parse_duration("5m").total_seconds() == 300
    assert parse_percent("1%") == 0.01
    assert parse_percent("0.5") == 0.005
    with pytest.raises(InvalidRolloutError, match="not a duration"):
        parse_duration("5 minutes")
    with pytest.raises(InvalidRolloutError, match="not a percentage"):
        parse_percent("150%")


def test_step_weights_keep_the_others_in_proportion() -> None:
    assert step_weights({1: 100}, 2, 10) == {1: 90, 2: 10}
    assert step_weights({1: 60, 3: 40}, 2, 50) == {1: 30, 2: 50, 3: 20}
    assert step_weights({1: 90, 2: 10}, 2, 25) == {1: 75, 2: 25}
    assert step_weights({1: 90, 2: 10}, 2, 100) == {2: 100}


@pytest.mark.parametrize("before", [{1: 100}, {1: 70, 3: 30}, {1: 50, 2: 5, 3: 45}])
def test_sticky_keys_moved_to_the_target_never_move_back(
    before: dict[int, float],
) -> None:
    keys = [f"user-{n}" for n in range(3000)]
    on_target: set[str] = set()
    previous = {key: choose_version(before, key, lambda: 0.0) for key in keys}
    for percent in (10, 25, 50, 75, 100):
        weights = step_weights(before, 2, percent)
        chosen = {key: choose_version(weights, key, lambda: 0.0) for key in keys}
        assert on_target <= {key for key, v in chosen.items() if v == 2}
        # A key changes version only to move to the target.
        assert all(chosen[k] in (previous[k], 2) for k in keys)
        on_target = {key for key, v in chosen.items() if v == 2}
        previous = chosen
    assert on_target == set(keys)


def _rollout(plan: Plan) -> Rollout:
    return Rollout(
        name="iris",
        alias="prod",
        target=2,
        plan=plan,
        state=STEPPING,
        step=-1,
        rollout_id="r1",
        started_at="2026-03-01T12:00:00.000Z",
        step_started_at="2026-03-01T12:00:00.000Z",
        next_evaluation_at="2026-03-01T12:00:00.000Z",
        base_revision=3,
        base_weights={1: 100},
        alias_revision=3,
        alias_revision_id="00000003-x",
        actor="ana",
    )


def test_a_rollout_document_round_trips() -> None:
    rollout = _rollout(Plan(steps=(5, 100), guardrails=Guardrails(max_p99_ms=250)))
    assert Rollout.from_dict(rollout.to_dict()) == rollout


def test_moves_between_states() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    rollout = _rollout(Plan(steps=(50, 100), gate=True))
    first = rollout.stepped(now, 4, "00000004-a", "step 1")
    assert (first.step, first.state, first.weights) == (0, STEPPING, {1: 50, 2: 50})
    assert first.needs_approval()
    paused = first.paused("paused by ana")
    assert paused.state == PAUSED
    with pytest.raises(InvalidRolloutError, match=r"cannot pause .* it is paused"):
        paused.paused("again")
    resumed = paused.resumed(now, 4, "00000004-a", "resumed by ana")
    last = resumed.stepped(now, 5, "00000005-b", "step 2")
    assert (last.state, last.weights) == (COMPLETED, {2: 100})
