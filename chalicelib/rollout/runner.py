"""The scheduled evaluator: every active rollout, once per run.

``evaluate_all`` lists the rollouts not yet finished (one rollout document per
alias), evaluates each that is due (``operations.evaluate``: its decision
record goes to S3 next to the rollout) and writes, per evaluation, one
structured log line and one EMF line (namespace ``Turnout``, dimensions
``[Model, Alias]``: ``RolloutEvaluations``, ``RolloutTargetPercent``,
``RolloutRollbacks``), so decisions can be read and alarmed on in CloudWatch.
One rollout's failure is logged and does not keep the others from their turn.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from chalicelib.clock import utc_now
from chalicelib.emf import BY_ALIAS, directive
from chalicelib.rollout import operations
from chalicelib.rollout.judge import ROLL_BACK
from chalicelib.rollout.metrics import CloudWatchSource, MetricsSource
from chalicelib.rollout.store import RolloutStore

logger = logging.getLogger("turnout.rollout")


@dataclass
class RolloutRuntime:
    """What the scheduled function works with: the store, the metrics source,
    the clock and where its lines go (stdout, looked up at each write)."""

    store: RolloutStore
    source: MetricsSource
    clock: Callable[[], datetime] = utc_now
    stream: TextIO | None = field(default=None)

    def write(self, line: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(line)
        stream.flush()


def evaluate_all(runtime: RolloutRuntime) -> list[operations.Evaluation]:
    """Evaluate every due rollout once; the evaluations that were not skipped."""
    done = []
    for rollout in runtime.store.active():
        try:
            evaluation = operations.evaluate(
                runtime.store,
                runtime.source,
                rollout.name,
                rollout.alias,
                runtime.clock(),
            )
        except Exception:
            logger.exception("evaluating %s@%s failed", rollout.name, rollout.alias)
            continue
        if evaluation.action != "skipped":
            runtime.write(evaluation_line(evaluation, int(time.time() * 1000)))
            done.append(evaluation)
    return done


def evaluation_line(evaluation: operations.Evaluation, timestamp: int) -> str:
    """The one EMF line (and structured log line) of an evaluation."""
    rollout = evaluation.rollout
    metrics = [
        ("RolloutEvaluations", "Count", 1),
        ("RolloutTargetPercent", "Percent", rollout.percent),
        ("RolloutRollbacks", "Count", int(evaluation.action == ROLL_BACK)),
    ]
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [
                directive([BY_ALIAS], [(name, unit) for name, unit, _ in metrics])
            ],
        },
        "Model": rollout.name,
        "Alias": rollout.alias,
        **{name: value for name, _, value in metrics},
        "event": "rollout_evaluation",
        "rollout_id": rollout.rollout_id,
        "target": rollout.target,
        "step": rollout.step + 1,
        "state": rollout.state,
        "action": evaluation.action,
        "reason": evaluation.reason,
        "decision_key": (evaluation.record or {}).get("key"),
    }
    return json.dumps(document, separators=(",", ":")) + "\n"


@functools.cache
def default_runtime() -> RolloutRuntime:
    """This container's runtime, from the environment (clients built once)."""
    import boto3

    from chalicelib.aliases.store import AliasStore
    from chalicelib.config import Settings
    from chalicelib.registry.versions import Registry

    settings = Settings.from_env()
    registry = Registry(
        boto3.client("s3"),
        settings.model_bucket,
        max_model_bytes=settings.max_model_bytes,
    )
    return RolloutRuntime(
        RolloutStore(AliasStore(registry)),
        CloudWatchSource(boto3.client("cloudwatch")),
    )
