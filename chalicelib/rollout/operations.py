"""What can be done to a rollout: start, evaluate, pause, resume, approve, abort.

Library functions the CLI, the scheduled evaluator and the tests all call, each
taking the store, the time (and for ``evaluate`` the metrics source) as
arguments. Every change of a rollout document is a compare-and-swap, and every
alias change is conditional on the revision the rollout wrote last, so:

- two evaluators at once never both advance: the second one's alias write or
  document write conflicts, and it reports that it stood aside;
- an alias changed by hand (``turnout alias set``) is noticed at the next
  evaluation by its revision id, and the rollout pauses, saying who changed it
  (``resume`` puts the alias back at the rollout's step);
- a version deleted under a rollout aborts it without touching the alias.

A rollback (the judge's, or ``abort``) writes the alias's weights from before
the rollout back as a new revision, the shadow and capture kept as they are.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.aliases.document import AliasDocument
from chalicelib.clock import iso_timestamp
from chalicelib.errors import (
    AliasConflictError,
    DocumentConflictError,
    InvalidRolloutError,
    VersionNotFoundError,
)
from chalicelib.rollout import judge as judging
from chalicelib.rollout.metrics import MetricsSource
from chalicelib.rollout.plan import (
    ABORTED,
    ACTIVE,
    AWAITING_APPROVAL,
    EVALUATED,
    HOLDING,
    PAUSED,
    ROLLED_BACK,
    STEPPING,
    Plan,
    Rollout,
    share_of,
    step_weights,
    validate_plan,
)
from chalicelib.rollout.store import RolloutStore


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation did: the rollout after it, the action taken
    (advance, hold, roll_back, stop, pause, abort, approval, or skipped) and
    its decision record (None when skipped)."""

    rollout: Rollout
    action: str
    reason: str
    record: dict[str, Any] | None = None


def start(
    store: RolloutStore,
    name: str,
    alias: str,
    target: int,
    plan: Plan,
    *,
    actor: str,
    now: datetime,
) -> Rollout:
    """Start moving ``name@alias`` to version ``target`` by ``plan``: the first
    step is written at once. InvalidRolloutError for a plan that cannot run or
    an alias already rolling out; VersionNotFoundError for an unknown or
    deleted target; AliasNotFoundError for an unknown alias."""
    document = store.aliases.get(name, alias)
    if not store.registry.is_live(name, target):
        raise VersionNotFoundError(name, target)
    previous = store.find(name, alias)
    if previous is not None and previous[0].state in ACTIVE:
        raise InvalidRolloutError(
            f"{name}@{alias} is already rolling out version {previous[0].target} "
            f"({previous[0].state.replace('_', ' ')}): abort it first"
        )
    validate_plan(plan, share_of(document.weights, target))
    rollout = Rollout(
        name=name,
        alias=alias,
        target=target,
        plan=plan,
        state=STEPPING,
        step=-1,
        rollout_id=f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        started_at=iso_timestamp(now),
        step_started_at=iso_timestamp(now),
        next_evaluation_at=iso_timestamp(now),
        base_revision=document.revision,
        base_weights=dict(document.weights),
        alias_revision=document.revision,
        alias_revision_id=document.revision_id,
        actor=actor,
        reason="started",
    )
    # The document first (it refuses a second start racing this one), then the
    # alias: a start whose alias write fails leaves a rollout that pauses.
    etag = store.save(rollout, previous[1] if previous else None)
    return _advance(store, rollout, etag, now, f"step 1: {_step_text(rollout, 0)}")


def evaluate(
    store: RolloutStore,
    source: MetricsSource,
    name: str,
    alias: str,
    now: datetime,
    *,
    force: bool = False,
) -> Evaluation:
    """Evaluate the rollout of ``name@alias`` once if it is due (``force``: now)
    and act on the decision; the decision record is written to S3."""
    rollout, etag = store.read(name, alias)
    if rollout.state not in EVALUATED:
        return Evaluation(rollout, "skipped", f"it is {rollout.state}")
    if not force and now < _time(rollout.next_evaluation_at):
        return Evaluation(rollout, "skipped", "not due yet")
    changed = _changed_outside(store, rollout)
    if changed is not None:
        return _settle(store, rollout, etag, now, "pause", changed, PAUSED)
    deleted = [v for v in rollout.weights if not store.registry.is_live(name, v)]
    if deleted:
        reason = (
            f"version {deleted[0]} was deleted during the rollout: stopped, the "
            "alias left as it is"
        )
        return _settle(store, rollout, etag, now, "abort", reason, ABORTED)
    step_start = _time(rollout.step_started_at)
    figures = source.figures(name, alias, rollout.weights, step_start, now)
    decision = judging.judge(
        rollout.target,
        rollout.weights,
        figures,
        rollout.plan.guardrails,
        step_seconds=(now - step_start).total_seconds(),
        interval_seconds=rollout.plan.interval_seconds,
        timeout_seconds=rollout.plan.timeout_seconds,
    )
    if decision.action == judging.ROLL_BACK:
        return _roll_back(store, rollout, etag, now, decision, ROLLED_BACK)
    if decision.action == judging.STOP:
        return _settle(
            store, rollout, etag, now, "stop", decision.reason, PAUSED, decision
        )
    if decision.action == judging.ADVANCE and rollout.needs_approval():
        reason = f"{decision.reason}; the last step waits for `rollout approve`"
        return _settle(
            store, rollout, etag, now, "approval", reason, AWAITING_APPROVAL, decision
        )
    if decision.action == judging.ADVANCE:
        reason = f"step {rollout.step + 2}: {_step_text(rollout, rollout.step + 1)}"
        judged = rollout.evaluated(now, _summary(decision))
        try:
            moved = _advance(store, judged, etag, now, f"{reason} ({decision.reason})")
        except (AliasConflictError, DocumentConflictError):
            return Evaluation(rollout, "skipped", "another evaluator got there first")
        return Evaluation(
            moved,
            decision.action,
            decision.reason,
            _record(store, rollout, moved, decision, now),
        )
    over = (now - step_start).total_seconds() >= rollout.plan.interval_seconds
    state = HOLDING if over else STEPPING
    return _settle(
        store, rollout, etag, now, decision.action, decision.reason, state, decision
    )


def pause(store: RolloutStore, name: str, alias: str, *, actor: str) -> Rollout:
    """Stop evaluating the rollout until ``resume`` (the alias stays as it is)."""
    rollout, etag = store.read(name, alias)
    paused = rollout.paused(f"paused by {actor}")
    store.save(paused, etag)
    return paused


def resume(
    store: RolloutStore, name: str, alias: str, *, actor: str, now: datetime
) -> Rollout:
    """Evaluate again; an alias changed meanwhile is put back at the rollout's
    current step first. The step's window restarts."""
    rollout, etag = store.read(name, alias)
    rollout.require_state({PAUSED}, "resume")
    document = store.aliases.get(name, alias)
    reason = f"resumed by {actor}"
    if document.revision_id != rollout.alias_revision_id and document.weights != (
        rollout.weights
    ):
        document = store.route(
            rollout,
            rollout.weights,
            f"{reason}: back at step {rollout.step + 1}",
            expected_revision=document.revision,
        )
    resumed = rollout.resumed(now, document.revision, document.revision_id, reason)
    store.save(resumed, etag)
    return resumed


def approve(
    store: RolloutStore, name: str, alias: str, *, actor: str, now: datetime
) -> Rollout:
    """Take the last step of a gated rollout that waits for approval."""
    rollout, etag = store.read(name, alias)
    if rollout.state != AWAITING_APPROVAL:
        raise InvalidRolloutError(
            f"the rollout of {name}@{alias} is {rollout.state.replace('_', ' ')}, "
            "not awaiting approval"
        )
    changed = _changed_outside(store, rollout)
    if changed is not None:
        raise InvalidRolloutError(f"{changed}; not approving")
    reason = (
        f"step {rollout.step + 2}: {_step_text(rollout, rollout.step + 1)} "
        f"(approved by {actor})"
    )
    return _advance(store, rollout, etag, now, reason)


def abort(
    store: RolloutStore, name: str, alias: str, *, actor: str, now: datetime
) -> Rollout:
    """Stop the rollout for good and restore the alias's weights from before it."""
    rollout, etag = store.read(name, alias)
    if rollout.state not in ACTIVE:
        raise InvalidRolloutError(
            f"the rollout of {name}@{alias} is already "
            f"{rollout.state.replace('_', ' ')}"
        )
    reason = f"aborted by {actor}"
    document = _restore(store, rollout, reason)
    aborted = rollout.finished(ABORTED, reason, document.revision, document.revision_id)
    store.save(aborted, etag)
    return aborted


def _advance(
    store: RolloutStore, rollout: Rollout, etag: str, now: datetime, reason: str
) -> Rollout:
    """Write the next step to the alias (conditionally on the rollout's last
    revision), then the document (on ``etag``)."""
    weights = _next_weights(rollout)
    document = store.route(
        rollout, weights, reason, expected_revision=rollout.alias_revision
    )
    moved = rollout.stepped(now, document.revision, document.revision_id, reason)
    store.save(moved, etag)
    return moved


def _roll_back(
    store: RolloutStore,
    rollout: Rollout,
    etag: str,
    now: datetime,
    decision: judging.Decision,
    state: str,
) -> Evaluation:
    reason = f"rolled back: {decision.reason}"
    try:
        document = _restore(store, rollout, reason)
    except AliasConflictError:
        return Evaluation(rollout, "skipped", "another evaluator got there first")
    judged = rollout.evaluated(now, _summary(decision)).finished(
        state, reason, document.revision, document.revision_id
    )
    store.save(judged, etag)
    return Evaluation(
        judged, decision.action, reason, _record(store, rollout, judged, decision, now)
    )


def _restore(store: RolloutStore, rollout: Rollout, reason: str) -> AliasDocument:
    """The alias back at the weights from before the rollout."""
    current = store.aliases.get(rollout.name, rollout.alias)
    return store.route(
        rollout, rollout.base_weights, reason, expected_revision=current.revision
    )


def _settle(
    store: RolloutStore,
    rollout: Rollout,
    etag: str,
    now: datetime,
    action: str,
    reason: str,
    state: str,
    decision: judging.Decision | None = None,
) -> Evaluation:
    """Record an evaluation that leaves the alias alone, in ``state``."""
    summary = _summary(decision) if decision else {"action": action, "reason": reason}
    judged = rollout.evaluated(now, summary).moved_to(state, reason)
    try:
        store.save(judged, etag)
    except DocumentConflictError:
        return Evaluation(rollout, "skipped", "another evaluator got there first")
    record = _record(
        store, rollout, judged, decision, now, action=action, reason=reason
    )
    return Evaluation(judged, action, reason, record)


def _record(
    store: RolloutStore,
    evaluated: Rollout,
    rollout: Rollout,
    decision: judging.Decision | None,
    now: datetime,
    *,
    action: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Write the evaluation's decision record: the step ``evaluated`` was at
    and its inputs, statistics, thresholds, action and reason, and the state
    ``rollout`` is in after it."""
    record: dict[str, Any] = {
        "evaluation": rollout.evaluations,
        "at": iso_timestamp(now),
        "name": rollout.name,
        "alias": rollout.alias,
        "target": rollout.target,
        "step": evaluated.step + 1,
        "percent": evaluated.percent,
        "weights": {str(v): w for v, w in sorted(evaluated.weights.items())},
        "state": rollout.state,
        "thresholds": {
            "max_error_rate": rollout.plan.guardrails.max_error_rate,
            "max_p99_ms": rollout.plan.guardrails.max_p99_ms,
            "max_latency_ratio": rollout.plan.guardrails.max_latency_ratio,
            "min_requests": rollout.plan.guardrails.min_requests,
        },
        **(decision.to_dict() if decision else {}),
    }
    if action is not None:
        record["action"] = action
    if reason is not None:
        record["reason"] = reason
    record["key"] = store.record_decision(rollout, record)
    return record


def _changed_outside(store: RolloutStore, rollout: Rollout) -> str | None:
    """Why the alias is not as the rollout last wrote it (None if it is)."""
    document = store.alias(rollout.name, rollout.alias)
    if document is None:
        return "the alias was deleted during the rollout: paused"
    if document.revision_id == rollout.alias_revision_id:
        return None
    change = document.current
    return (
        f"the alias was changed outside the rollout (revision {change.revision} by "
        f"{change.actor or 'someone'}: {change.reason or 'no reason given'}): paused; "
        "`rollout resume` puts it back at the rollout's step, `rollout abort` "
        "restores it as it was before the rollout"
    )


def _next_weights(rollout: Rollout) -> dict[int, float]:
    return step_weights(
        rollout.base_weights, rollout.target, rollout.plan.steps[rollout.step + 1]
    )


def _step_text(rollout: Rollout, step: int) -> str:
    percent = rollout.plan.steps[step]
    return f"{percent:g} % to version {rollout.target}"


def _summary(decision: judging.Decision) -> dict[str, Any]:
    return {
        "action": decision.action,
        "reason": decision.reason,
        "more_requests": decision.more_requests,
        "guardrails": decision.to_dict()["guardrails"],
        "srm": decision.srm,
    }


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
