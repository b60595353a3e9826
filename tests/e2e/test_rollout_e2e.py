"""A rollout on the dev stack: requests through chalice local become metrics on
the moto server, the stack's timer runs the scheduled evaluator, and the alias
reaches the new version (a stack of its own, whose timer runs every 2 s)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import utc_now
from chalicelib.rollout import operations
from chalicelib.rollout.plan import Guardrails, Plan, Rollout
from chalicelib.rollout.store import RolloutStore
from tests.e2e.e2e_support import STARTUP_TIMEOUT, HttpClient, eventually
from tools.devstack.stack import DevStack

ALIAS = "rollout-e2e"
SETOSA = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture(scope="module")
def fast_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    log_dir = tmp_path_factory.mktemp("rollout-stack")
    with DevStack(
        log_dir=log_dir, startup_timeout=STARTUP_TIMEOUT, schedule_seconds=2
    ) as stack:
        yield stack


def test_the_scheduled_evaluator_completes_a_healthy_rollout(
    fast_stack: DevStack, tmp_path: Path
) -> None:
    api = HttpClient(fast_stack.api_url)
    fast_stack.aliases.set_routing("iris", ALIAS, {1: 100}, actor="e2e")
    for _ in range(3):  # loaded before the rollout: no cold start in its figures
        assert api.post_json("/v2/models/iris/versions/2/infer", _v2()).status == 200
    store = RolloutStore(fast_stack.aliases)
    operations.start(
        store,
        "iris",
        ALIAS,
        2,
        Plan(
            steps=(50, 100),
            interval_seconds=5,
            timeout_seconds=120,
            guardrails=Guardrails(min_requests=20, max_latency_ratio=None),
        ),
        actor="e2e",
        now=utc_now(),
    )
    answered: dict[str, int] = {}
    for number in range(100):
        reply = api.post_json(
            "/models/iris/predict",
            SETOSA,
            headers={"X-Turnout-Alias": ALIAS, "X-Routing-Key": f"user-{number}"},
        )
        assert reply.status == 200, reply.body
        version = reply.headers["X-Model-Version"]
        answered[version] = answered.get(version, 0) + 1
    assert set(answered) == {"1", "2"}

    def finished() -> Rollout | None:
        rollout, _ = store.read("iris", ALIAS)
        return rollout if rollout.state not in ("stepping", "holding") else None

    rollout = eventually(
        finished,
        timeout=90,
        interval=1,
        message=lambda: "\n".join(
            [str(store.read("iris", ALIAS)[0].reason), fast_stack.logs()]
        ),
    )
    assert rollout.state == "completed", rollout.reason
    assert fast_stack.aliases.get("iris", ALIAS).weights == {2: 100}
    records = store.decisions(rollout)
    assert records[-1]["action"] == "advance"
    assert records[-1]["figures"][0]["latency_source"].startswith("no percentiles")
    assert fast_stack.aliases.history("iris", ALIAS)[-1].actor == (
        f"rollout {rollout.rollout_id} (e2e)"
    )


def _v2() -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "float_input",
                "shape": [1, 4],
                "datatype": "FP32",
                "data": [5.1, 3.5, 1.4, 0.2],
            }
        ]
    }
