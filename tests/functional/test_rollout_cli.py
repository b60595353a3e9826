"""``turnout rollout`` on moto, its group invoked directly (main.py registers it)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result

from chalicelib.aliases.store import AliasStore
from chalicelib.errors import InvalidRolloutError
from chalicelib.registry.versions import Registry
from turnout.cli.rollout import rollout


@dataclass
class Session:
    aliases: AliasStore
    as_json: bool = False

    def cloudwatch(self) -> Any:
        return boto3.client("cloudwatch", region_name="us-east-1")

    def emit(self, payload: Any, lines: Iterable[str]) -> None:
        import click

        if self.as_json:
            click.echo(json.dumps(payload))
        else:
            for line in lines:
                click.echo(line)


@pytest.fixture
def session(demo_registry: Registry, aliases: AliasStore) -> Session:
    aliases.set_routing("iris", "live", {1: 100}, actor="tests")
    return Session(aliases)


def turnout_rollout(session: Session, *args: str) -> Result:
    return CliRunner().invoke(rollout, list(args), obj=session)


def test_start_writes_the_first_step_and_status_shows_the_plan(
    session: Session, aliases: AliasStore
) -> None:
    started = turnout_rollout(
        session,
        *("start", "iris", "live", "--to", "2", "--canary", "20"),
        *("--interval", "2m", "--max-p99-ms", "250", "--actor", "ana"),
    )
    assert started.exit_code == 0, started.output
    assert aliases.get("iris", "live").weights == {1: 80, 2: 20}
    lines = turnout_rollout(session, "status", "iris", "live").output.splitlines()
    assert lines[0].endswith(": iris@live to version 2, stepping")
    assert lines[1] == "  plan: steps 20%, 100%; every 2 min, timeout 60 min a step"
    assert lines[2] == (
        "  guardrails: error rate <= 1.00%, p99 <= 250 ms, median ratio <= 1.5, "
        "at least 200 requests a step"
    )
    assert lines[3].startswith("  step 1 of 2: 20% (weights 1=80, 2=20) since ")
    assert lines[-1].startswith("  next evaluation: ")


def test_step_evaluates_now_and_history_lists_the_decision(session: Session) -> None:
    turnout_rollout(session, "start", "iris", "live", "--to", "2", "--actor", "ana")
    stepped = turnout_rollout(session, "step", "iris", "live")
    assert stepped.exit_code == 0, stepped.output
    output = stepped.output
    assert output.startswith("hold: evidence is thin: 0 of the 200 requests")
    table = [line.split() for line in output.splitlines()]
    assert ["guardrail", "status", "target", "others", "limit", "statistic", "p"] in (
        table
    )
    assert ["error_rate", "thin", "-", "-", "0.01", "0", "1"] in table
    assert "  the step needs 200 more requests" in output
    history = turnout_rollout(session, "history", "iris", "live").output.splitlines()
    assert history[0].split() == ["#", "at", "step", "percent", "action", "reason"]
    assert history[1].split()[2:5] == ["1", "10%", "hold"]


def test_pause_resume_and_abort(session: Session, aliases: AliasStore) -> None:
    turnout_rollout(session, "start", "iris", "live", "--to", "2")
    assert "paused" in turnout_rollout(session, "pause", "iris", "live").output
    assert "stepping" in turnout_rollout(session, "resume", "iris", "live").output
    aborted = turnout_rollout(session, "abort", "iris", "live", "--actor", "bo")
    assert aborted.output.splitlines()[0].endswith("aborted")
    assert aliases.get("iris", "live").weights == {1: 100}


def test_a_refused_start_is_an_error_naming_the_rule(session: Session) -> None:
    refused = turnout_rollout(
        session, "start", "iris", "live", "--to", "2", "--steps", "10,50"
    )
    assert isinstance(refused.exception, InvalidRolloutError)
    assert refused.exception.message == "steps 10,50 must end at 100"
    bad = turnout_rollout(
        session, "start", "iris", "live", "--to", "2", "--interval", "5 minutes"
    )
    assert bad.exit_code == 2
    assert "'5 minutes' is not a duration like 90s, 5m or 1h" in bad.output
