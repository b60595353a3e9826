"""``turnout rollout``: progressive rollouts of an alias to a version.

Each command parses, calls one function of ``chalicelib.rollout.operations``
and prints the result. The group reads what it needs from the ``turnout``
session (``context.obj``): ``aliases`` (the alias store), ``cloudwatch()`` and
``emit(payload, lines)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import click

from chalicelib.aliases.store import AliasStore
from chalicelib.errors import InvalidRolloutError
from chalicelib.rollout import operations
from chalicelib.rollout.metrics import CloudWatchSource
from chalicelib.rollout.plan import (
    Guardrails,
    Plan,
    Rollout,
    parse_duration,
    parse_percent,
    plan_steps,
)
from chalicelib.rollout.store import RolloutStore
from turnout.cli.parsing import default_actor


class RolloutSession(Protocol):
    """What the group uses of the ``turnout`` session."""

    @property
    def aliases(self) -> AliasStore: ...

    def cloudwatch(self) -> Any: ...

    def emit(self, payload: Any, lines: Iterable[str]) -> None: ...


def _parsed(parse: Any) -> Any:
    """A click callback that turns ``parse``'s InvalidRolloutError into a usage
    error naming the option."""

    def callback(context: click.Context, parameter: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return parse(value)
        except InvalidRolloutError as error:
            raise click.BadParameter(error.message) from None

    return callback


def _now() -> datetime:
    return datetime.now(UTC)


def _store(session: RolloutSession) -> RolloutStore:
    return RolloutStore(session.aliases)


actor_option = click.option(
    "--actor",
    default=default_actor,
    show_default="the current user",
    help="Who does it, recorded in the rollout and the alias history.",
)


def _name_and_alias(function: Any) -> Any:
    return click.argument("name")(click.argument("alias")(function))


@click.group()
def rollout() -> None:
    """Move an alias to a version step by step, judged on its metrics."""


@rollout.command()
@_name_and_alias
@click.option("--to", "version", type=click.IntRange(min=1), required=True)
@click.option("--steps", help="Percentages to step through, ending at 100.")
@click.option("--canary", type=click.FloatRange(0, 100, min_open=True))
@click.option("--linear", type=click.FloatRange(0, 100, min_open=True))
@click.option("--interval", default="5m", callback=_parsed(parse_duration))
@click.option("--max-error-rate", default="1%", callback=_parsed(parse_percent))
@click.option("--max-p99-ms", type=click.FloatRange(0, min_open=True))
@click.option("--max-latency-ratio", type=float, default=1.5, show_default=True)
@click.option("--min-requests", type=click.IntRange(min=1), default=200)
@click.option("--timeout", default="60m", callback=_parsed(parse_duration))
@click.option("--gate", is_flag=True, help="Wait for `approve` before the last step.")
@actor_option
@click.pass_obj
def start(
    session: RolloutSession,
    name: str,
    alias: str,
    version: int,
    steps: str | None,
    canary: float | None,
    linear: float | None,
    interval: Any,
    max_error_rate: float,
    max_p99_ms: float | None,
    max_latency_ratio: float,
    min_requests: int,
    timeout: Any,
    gate: bool,
    actor: str,
) -> None:
    """Start moving NAME's ALIAS to version --to; the first step is written now
    and the scheduled evaluator takes it from there."""
    plan = Plan(
        steps=plan_steps(steps, canary, linear),
        interval_seconds=interval.total_seconds(),
        timeout_seconds=timeout.total_seconds(),
        gate=gate,
        guardrails=Guardrails(
            max_error_rate=max_error_rate,
            max_p99_ms=max_p99_ms,
            max_latency_ratio=max_latency_ratio,
            min_requests=min_requests,
        ),
    )
    started = operations.start(
        _store(session), name, alias, version, plan, actor=actor, now=_now()
    )
    _emit(session, started)


@rollout.command()
@_name_and_alias
@click.pass_obj
def status(session: RolloutSession, name: str, alias: str) -> None:
    """The plan, the current step, each guardrail against its threshold (with
    its test's statistic and p-value), what the step still needs and when the
    next evaluation is."""
    current, _ = _store(session).read(name, alias)
    _emit(session, current)


@rollout.command()
@_name_and_alias
@actor_option
@click.pass_obj
def pause(session: RolloutSession, name: str, alias: str, actor: str) -> None:
    """Stop evaluating (the alias stays as it is) until `resume`."""
    _emit(session, operations.pause(_store(session), name, alias, actor=actor))


@rollout.command()
@_name_and_alias
@actor_option
@click.pass_obj
def resume(session: RolloutSession, name: str, alias: str, actor: str) -> None:
    """Evaluate again; the step's window starts afresh."""
    resumed = operations.resume(_store(session), name, alias, actor=actor, now=_now())
    _emit(session, resumed)


@rollout.command()
@_name_and_alias
@actor_option
@click.pass_obj
def approve(session: RolloutSession, name: str, alias: str, actor: str) -> None:
    """Take the last step of a rollout started with --gate."""
    approved = operations.approve(_store(session), name, alias, actor=actor, now=_now())
    _emit(session, approved)


@rollout.command()
@_name_and_alias
@actor_option
@click.pass_obj
def abort(session: RolloutSession, name: str, alias: str, actor: str) -> None:
    """Stop for good and restore the alias's weights from before the rollout."""
    aborted = operations.abort(_store(session), name, alias, actor=actor, now=_now())
    _emit(session, aborted)


@rollout.command()
@_name_and_alias
@click.pass_obj
def step(session: RolloutSession, name: str, alias: str) -> None:
    """Evaluate once now, whenever the next evaluation was due."""
    evaluation = operations.evaluate(
        _store(session),
        CloudWatchSource(session.cloudwatch()),
        name,
        alias,
        _now(),
        force=True,
    )
    session.emit(
        {
            "action": evaluation.action,
            "reason": evaluation.reason,
            "rollout": evaluation.rollout.to_dict(),
            "decision": evaluation.record,
        },
        [
            f"{evaluation.action}: {evaluation.reason}",
            *status_lines(evaluation.rollout),
        ],
    )


@rollout.command()
@_name_and_alias
@click.pass_obj
def history(session: RolloutSession, name: str, alias: str) -> None:
    """Every decision of the alias's latest rollout, oldest first."""
    store = _store(session)
    current, _ = store.read(name, alias)
    records = store.decisions(current)
    session.emit(records, history_lines(records))


def _emit(session: RolloutSession, current: Rollout) -> None:
    session.emit(current.to_dict(), status_lines(current))


def status_lines(current: Rollout) -> list[str]:
    """A rollout as people read it."""
    plan = current.plan
    rails = plan.guardrails
    steps = ", ".join(f"{s:g}%" for s in plan.steps)
    weights = ", ".join(f"{v}={w:g}" for v, w in sorted(current.weights.items()))
    lines = [
        f"rollout {current.rollout_id}: {current.name}@{current.alias} to version "
        f"{current.target}, {current.state.replace('_', ' ')}",
        f"  plan: steps {steps}{' (gated before the last)' if plan.gate else ''}; "
        f"every {_duration(plan.interval_seconds)}, timeout "
        f"{_duration(plan.timeout_seconds)} a step",
        f"  guardrails: error rate <= {rails.max_error_rate:.2%}"
        + (f", p99 <= {rails.max_p99_ms:g} ms" if rails.max_p99_ms else "")
        + (
            f", median ratio <= {rails.max_latency_ratio:g}"
            if rails.max_latency_ratio
            else ""
        )
        + f", at least {rails.min_requests} requests a step",
        f"  step {current.step + 1} of {len(plan.steps)}: {current.percent:g}% "
        f"(weights {weights}) since {current.step_started_at}",
        f"  {current.reason}",
    ]
    decision = current.last_decision
    if decision and "guardrails" in decision:
        lines.append("  last evaluation:")
        rows = [
            (
                g["name"],
                g["status"],
                _figure(g["value"]),
                _figure(g["others"]),
                _figure(g["threshold"]),
                _figure(g["statistic"]),
                _figure(g["p_value"]),
            )
            for g in decision["guardrails"]
        ]
        lines += _table(
            ("guardrail", "status", "target", "others", "limit", "statistic", "p"),
            rows,
        )
    if current.state in ("stepping", "holding"):
        if decision and "more_requests" in decision:
            more = decision["more_requests"]
            lines.append(f"  the step needs {more} more requests")
        lines.append(f"  next evaluation: {current.next_evaluation_at}")
    return lines


def history_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    if not records:
        return ["no evaluation yet"]
    return _table(
        ("#", "at", "step", "percent", "action", "reason"),
        [
            (
                r["evaluation"],
                r["at"],
                r["step"],
                f"{r['percent']:g}%",
                r["action"],
                r["reason"],
            )
            for r in records
        ],
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    texts = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in texts) for i in range(len(headers))]
    return [
        "  "
        + "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in texts
    ]


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
