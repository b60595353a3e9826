"""Progressive rollouts on moto S3, with a fake clock and a fake metrics source."""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from chalicelib.aliases.document import Capture, Shadow
from chalicelib.aliases.store import AliasStore
from chalicelib.errors import (
    InvalidRolloutError,
    VersionInUseError,
    VersionNotFoundError,
)
from chalicelib.registry.versions import Registry
from chalicelib.rollout import operations
from chalicelib.rollout.metrics import FALLBACK, CloudWatchSource
from chalicelib.rollout.plan import (
    ABORTED,
    AWAITING_APPROVAL,
    COMPLETED,
    HOLDING,
    PAUSED,
    ROLLED_BACK,
    Guardrails,
    Plan,
    Rollout,
)
from chalicelib.rollout.runner import RolloutRuntime, evaluate_all
from chalicelib.rollout.store import RolloutStore
from tests.demo_support import model_bytes
from tests.emf_support import check_emf, emf_lines
from tests.rollout_support import START, Behaviour, FakeClock, FakeSource

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PLAN = Plan(
    steps=(10, 25, 50, 100),
    interval_seconds=300,
    timeout_seconds=1800,
    guardrails=Guardrails(max_error_rate=0.01, max_p99_ms=250, min_requests=200),
)


@pytest.fixture
def store(demo_registry: Registry, aliases: AliasStore) -> RolloutStore:
    """iris@live routed to version 1 alone; iris v3 registered, unrouted."""
    demo_registry.register("iris", model_bytes("iris-v1.onnx"), description="v3")
    aliases.set_routing("iris", "live", {1: 100}, actor="tests")
    return RolloutStore(aliases)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def source(aliases: AliasStore) -> FakeSource:
    return FakeSource(lambda: aliases.get("iris", "live").weights)


def start(
    store: RolloutStore, clock: FakeClock, plan: Plan = PLAN, **kw: Any
) -> Rollout:
    return operations.start(
        store, "iris", "live", kw.get("target", 2), plan, actor="ana", now=clock()
    )


def run(
    store: RolloutStore, source: FakeSource, clock: FakeClock, minutes: int
) -> list[operations.Evaluation]:
    """Evaluate once a minute for ``minutes``, until the rollout is no longer
    evaluated; the evaluations that were not skipped."""
    done = []
    for _ in range(minutes):
        evaluation = operations.evaluate(
            store, source, "iris", "live", clock.advance(60)
        )
        if evaluation.action != "skipped":
            done.append(evaluation)
        if evaluation.rollout.state not in ("stepping", "holding"):
            break
    return done


def test_a_healthy_version_completes_every_step(
    store: RolloutStore, aliases: AliasStore, source: FakeSource, clock: FakeClock
) -> None:
    rollout = start(store, clock)
    assert aliases.get("iris", "live").weights == {1: 90, 2: 10}
    evaluations = run(store, source, clock, 120)
    final = evaluations[-1].rollout
    assert final.state == COMPLETED
    assert aliases.get("iris", "live").weights == {2: 100}
    history = aliases.history("iris", "live")[-4:]
    assert [r.weights for r in history] == [
        {1: 90, 2: 10},
        {1: 75, 2: 25},
        {1: 50, 2: 50},
        {2: 100},
    ]
    assert history[0].reason == "step 1: 10 % to version 2"
    assert history[1].reason.startswith(
        "step 2: 25 % to version 2 (every guardrail passes on "
    )
    assert all(r.actor == f"rollout {rollout.rollout_id} (ana)" for r in history)
    records = store.decisions(final)
    assert len(records) == final.evaluations == len(evaluations)
    assert {r["action"] for r in records} == {"hold", "advance"}
    advanced = [r for r in records if r["action"] == "advance"]
    assert [(r["step"], r["percent"]) for r in advanced] == [(1, 10), (2, 25), (3, 50)]
    assert advanced[0]["weights"] == {"1": 90, "2": 10}
    assert records[0]["thresholds"]["max_error_rate"] == 0.01
    assert records[0]["figures"][0]["latency_source"] == "CloudWatch percentiles"


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (Behaviour(error_rate=0.08), "error rate"),
        (Behaviour(p99_ms=400.0), "p99 400.0 ms"),
    ],
)
def test_a_regression_is_rolled_back_at_the_first_conclusive_evaluation(
    store: RolloutStore,
    aliases: AliasStore,
    source: FakeSource,
    clock: FakeClock,
    behaviour: Behaviour,
    reason: str,
) -> None:
    start(store, clock)
    source.behaviours[2] = behaviour
    evaluations = run(store, source, clock, 60)
    last = evaluations[-1]
    assert last.rollout.state == ROLLED_BACK
    assert last.reason.startswith("rolled back: ") and reason in last.reason
    # Every earlier evaluation held: the first conclusive one rolled back, and
    # the schedule looks at least once a minute (within one interval).
    assert {e.action for e in evaluations[:-1]} <= {"hold"}
    assert aliases.get("iris", "live").weights == {1: 100}


def test_no_traffic_holds_then_rolls_back_when_time_runs_out(
    store: RolloutStore, aliases: AliasStore, source: FakeSource, clock: FakeClock
) -> None:
    start(store, clock)
    source.silent = True
    evaluations = run(store, source, clock, 60)
    assert evaluations[5].rollout.state == HOLDING
    assert "0 of the 200 requests a step needs (200 more)" in evaluations[5].reason
    assert len(evaluations) == 30
    assert evaluations[-1].rollout.state == ROLLED_BACK
    assert "ran out of time: the step lasted 30 min" in evaluations[-1].reason
    assert aliases.get("iris", "live").weights == {1: 100}


def test_a_sample_ratio_mismatch_stops_it_and_leaves_the_alias(
    store: RolloutStore, aliases: AliasStore, source: FakeSource, clock: FakeClock
) -> None:
    start(store, clock)
    source.split = {1: 50, 2: 50}
    evaluations = run(store, source, clock, 10)
    assert evaluations[-1].rollout.state == PAUSED
    assert evaluations[-1].action == "stop"
    assert evaluations[-1].reason.startswith("sample ratio mismatch")
    assert aliases.get("iris", "live").weights == {1: 90, 2: 10}


def test_a_rollback_restores_the_exact_weights_shadow_and_capture(
    store: RolloutStore, aliases: AliasStore, source: FakeSource, clock: FakeClock
) -> None:
    aliases.set_routing(
        "iris", "live", {1: 70, 3: 30}, shadow=Shadow(3, 5), actor="tests"
    )
    aliases.set_capture("iris", "live", Capture(20), actor="tests")
    before = aliases.get("iris", "live")
    start(store, clock)
    assert aliases.get("iris", "live").weights == {1: 63, 2: 10, 3: 27}
    source.behaviours[2] = Behaviour(error_rate=0.2)
    run(store, source, clock, 30)
    after = aliases.get("iris", "live")
    assert after.weights == before.weights == {1: 70, 3: 30}
    assert (after.shadow, after.capture) == (before.shadow, before.capture)


def test_two_evaluators_at_once_advance_once(
    store: RolloutStore, aliases: AliasStore, source: FakeSource, clock: FakeClock
) -> None:
    start(store, clock)
    clock.advance(600)
    revision = aliases.get("iris", "live").revision
    both_read = threading.Barrier(2)
    figures = source.figures

    def in_step(*args: Any) -> Any:
        both_read.wait(timeout=10)
        return figures(*args)

    source.figures = in_step  # type: ignore[method-assign,assignment]
    results: list[operations.Evaluation] = []

    def evaluate() -> None:
        results.append(operations.evaluate(store, source, "iris", "live", clock()))

    threads = [threading.Thread(target=evaluate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.action for r in results) == ["advance", "skipped"]
    assert aliases.get("iris", "live").revision == revision + 1
    rollout, _ = store.read("iris", "live")
    assert (rollout.step, rollout.evaluations) == (1, 1)


def test_the_gate_waits_for_approval_before_the_last_step(
    store: RolloutStore, aliases: AliasStore, source: FakeSource, clock: FakeClock
) -> None:
    start(store, clock, Plan(steps=(50, 100), gate=True, guardrails=PLAN.guardrails))
    evaluations = run(store, source, clock, 30)
    assert evaluations[-1].rollout.state == AWAITING_APPROVAL
    assert evaluations[-1].reason.endswith("the last step waits for `rollout approve`")
    assert run(store, source, clock, 5) == []
    assert aliases.get("iris", "live").weights == {1: 50, 2: 50}
    approved = operations.approve(store, "iris", "live", actor="bo", now=clock())
    assert approved.state == COMPLETED
    assert aliases.get("iris", "live").current.reason == (
        "step 2: 100 % to version 2 (approved by bo)"
    )


def test_a_manual_alias_change_pauses_it_and_resume_continues(
    store: RolloutStore, aliases: AliasStore, source: FakeSource, clock: FakeClock
) -> None:
    start(store, clock)
    aliases.set_routing("iris", "live", {1: 80, 2: 20}, actor="bo", reason="hotfix")
    evaluations = run(store, source, clock, 3)
    assert evaluations[-1].rollout.state == PAUSED
    assert evaluations[-1].reason.startswith(
        "the alias was changed outside the rollout (revision 3 by bo: hotfix): paused"
    )
    resumed = operations.resume(store, "iris", "live", actor="ana", now=clock())
    assert resumed.alias_revision == 4
    assert aliases.get("iris", "live").weights == {1: 90, 2: 10}
    assert run(store, source, clock, 120)[-1].rollout.state == COMPLETED


def test_a_deleted_version_stops_it_without_touching_the_alias(
    store: RolloutStore, aliases: AliasStore, source: FakeSource, clock: FakeClock
) -> None:
    start(store, clock)
    with pytest.raises(VersionInUseError):
        aliases.delete_version("iris", 2)
    # A deletion's first step, as if it had raced the rollout's start.
    store.registry.write_tombstone("iris", 2, actor="bo")
    evaluation = run(store, source, clock, 1)[-1]
    assert evaluation.rollout.state == ABORTED
    assert evaluation.reason.startswith("version 2 was deleted during the rollout")
    assert aliases.get("iris", "live").weights == {1: 90, 2: 10}


def test_pause_and_abort(
    store: RolloutStore, aliases: AliasStore, clock: FakeClock
) -> None:
    start(store, clock)
    assert operations.pause(store, "iris", "live", actor="bo").state == PAUSED
    aborted = operations.abort(store, "iris", "live", actor="bo", now=clock())
    assert (aborted.state, aborted.reason) == (ABORTED, "aborted by bo")
    assert aliases.get("iris", "live").weights == {1: 100}
    with pytest.raises(InvalidRolloutError, match="is already aborted"):
        operations.abort(store, "iris", "live", actor="bo", now=clock())


def test_each_refusal_of_start(
    store: RolloutStore, aliases: AliasStore, clock: FakeClock
) -> None:
    with pytest.raises(VersionNotFoundError, match="9"):
        start(store, clock, target=9)
    aliases.delete_version("iris", 3)
    with pytest.raises(VersionNotFoundError, match="3"):
        start(store, clock, target=3)
    with pytest.raises(InvalidRolloutError, match="must increase"):
        start(store, clock, Plan(steps=(50, 25, 100)))
    with pytest.raises(InvalidRolloutError, match="must end at 100"):
        start(store, clock, Plan(steps=(10, 50)))
    with pytest.raises(InvalidRolloutError, match="already serves 100 %"):
        start(store, clock, target=1)
    start(store, clock)
    with pytest.raises(
        InvalidRolloutError, match=r"already rolling out version 2 \(stepping\): abort"
    ):
        start(store, clock)


def test_the_runner_writes_one_emf_line_per_evaluation(
    store: RolloutStore, source: FakeSource, clock: FakeClock
) -> None:
    start(store, clock)
    stream = io.StringIO()
    runtime = RolloutRuntime(store, source, clock, stream)
    clock.advance(60)
    assert len(evaluate_all(runtime)) == 1
    assert evaluate_all(runtime) == []  # not due again within the minute
    (line,) = emf_lines(stream.getvalue())
    check_emf(line)
    assert line["RolloutEvaluations"] == 1
    assert line["RolloutTargetPercent"] == 10
    assert (line["action"], line["state"]) == ("hold", "stepping")
    assert line["decision_key"].startswith("models/iris/aliases/live/rollouts/")


def test_cloudwatch_source_reads_counts_and_says_where_latency_comes_from(
    s3: S3Client,
) -> None:
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    for version, requests, errors, latency in ((1, 90, 1, 10.0), (2, 10, 2, 30.0)):
        dimensions = [
            {"Name": "Model", "Value": "iris"},
            {"Name": "Alias", "Value": "live"},
            {"Name": "Version", "Value": str(version)},
        ]
        at = START + timedelta(seconds=30)
        cloudwatch.put_metric_data(
            Namespace="Turnout",
            MetricData=[
                {
                    "MetricName": "Requests",
                    "Dimensions": dimensions,
                    "Value": requests,
                    "Timestamp": at,
                },
                {
                    "MetricName": "ServerErrors",
                    "Dimensions": dimensions,
                    "Value": errors,
                    "Timestamp": at,
                },
                {
                    "MetricName": "Latency",
                    "Dimensions": dimensions,
                    "Value": latency,
                    "Timestamp": at,
                },
                {
                    "MetricName": "Latency",
                    "Dimensions": dimensions,
                    "Value": latency * 2,
                    "Timestamp": at,
                },
            ],
        )
    found = CloudWatchSource(cloudwatch).figures(
        "iris", "live", [1, 2], START, START + timedelta(minutes=2)
    )
    assert (found[2].requests, found[2].errors) == (10, 2)
    assert (found[2].latency_p50_ms, found[2].latency_p99_ms) == (45.0, 60.0)
    assert found[2].latency_source == FALLBACK
