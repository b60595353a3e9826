"""The dev stack's timer, which runs ``@app.schedule`` functions (``chalice local``
runs none): its pace, its events and its failures, on a fake clock."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from chalice.app import CloudWatchEvent

from tools.devstack.emulator import Timer, scheduled_event, scheduled_functions

START = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        return self.seconds


class StopAfter(threading.Event):
    """A stop event that advances the fake clock instead of sleeping, and is set
    once ``waits`` waits have passed."""

    def __init__(self, clock: FakeClock, waits: int) -> None:
        super().__init__()
        self.clock = clock
        self.waits = waits

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None and timeout >= 0
        self.clock.seconds += timeout
        self.waits -= 1
        return self.waits < 0


def run_timer(
    handler: Any, clock: FakeClock, *, runs: int, every: float = 60.0
) -> None:
    timer = Timer(
        "evaluate_rollouts",
        handler,
        every=every,
        now=lambda: START,
        monotonic=clock.monotonic,
    )
    timer.run(StopAfter(clock, waits=runs))


def test_the_function_runs_every_period_the_first_time_after_one() -> None:
    clock = FakeClock()
    runs: list[float] = []

    run_timer(lambda event: runs.append(clock.seconds), clock, runs=3)

    assert runs == [60.0, 120.0, 180.0]


def test_each_run_gets_a_scheduled_event_chalice_reads() -> None:
    clock = FakeClock()
    events: list[dict[str, Any]] = []

    run_timer(events.append, clock, runs=2)

    assert len(events) == 2 and events[0]["id"] != events[1]["id"]
    event = CloudWatchEvent(events[0], context=None)
    assert event.detail_type == "Scheduled Event"
    assert event.source == "aws.events"
    assert event.time == "2026-12-02T03:00:00Z"
    assert event.region == "us-east-1"
    assert event.resources == [
        "arn:aws:events:us-east-1:123456789012:rule/evaluate_rollouts"
    ]
    assert event.detail == {}


def test_a_failing_run_is_logged_and_the_next_one_still_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    runs: list[float] = []

    def fail_first(event: dict[str, Any]) -> None:
        runs.append(clock.seconds)
        if len(runs) == 1:
            raise RuntimeError("the evaluator broke")

    caplog.set_level(logging.INFO, logger="devstack")
    run_timer(fail_first, clock, runs=2)

    assert runs == [60.0, 120.0]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        "schedule evaluate_rollouts: the handler failed"
    ]
    assert failures[0].exc_info is not None
    assert "the evaluator broke" in str(failures[0].exc_info[1])


def test_a_run_that_overruns_delays_the_next_instead_of_a_burst() -> None:
    clock = FakeClock()
    runs: list[float] = []

    def slow(event: dict[str, Any]) -> None:
        runs.append(clock.seconds)
        if len(runs) == 1:
            clock.seconds += 150.0  # two and a half periods

    run_timer(slow, clock, runs=3)

    assert runs == [60.0, 210.0, 270.0]


@pytest.mark.parametrize("every", [0.0, -1.0])
def test_a_period_that_is_not_positive_is_refused(every: float) -> None:
    with pytest.raises(ValueError) as refusal:
        Timer("f", lambda event: None, every=every)

    assert str(refusal.value) == (f"a timer runs every so many seconds, not {every!r}")


def test_scheduled_event_names_its_rule_and_time_in_utc() -> None:
    event = scheduled_event("nightly", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))

    assert event["time"] == "2026-01-02T03:04:05Z"
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/nightly"]


def test_the_scheduled_functions_of_an_app_are_found_in_its_source() -> None:
    source = """
from chalice import Chalice, Rate
app = Chalice(app_name="x")

@app.route("/")
def index(): ...

@app.schedule(Rate(1, unit=Rate.MINUTES))
def evaluate_rollouts(event): ...

@app.on_s3_event(bucket="b")
def handle_upload(event): ...

@app.schedule("cron(0 3 * * ? *)", name="nightly")
def compact(event): ...
"""

    assert scheduled_functions(source) == ["evaluate_rollouts", "compact"]


def test_an_app_without_scheduled_functions_has_none() -> None:
    assert scheduled_functions("app = 1\n\ndef handler(event): ...\n") == []
