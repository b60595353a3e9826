"""Metrics on the dev stack: requests to chalice local become CloudWatch metrics
on the moto server (forwarded from its EMF lines), which get_metric_statistics
and ``turnout metrics`` read."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner

from tests.e2e.e2e_support import HttpClient, eventually
from tools.devstack.clients import cloudwatch_client
from tools.devstack.stack import DevStack
from turnout.cli.main import cli

ALIAS = "metrics-e2e"


def test_requests_become_metrics_in_the_dev_stacks_cloudwatch(
    dev_stack: DevStack, api: HttpClient
) -> None:
    dev_stack.aliases.set_routing("iris", ALIAS, {2: 100}, actor="e2e")
    request_ids = []
    for _ in range(2):
        reply = api.post_json(
            "/models/iris/predict",
            {"instances": [[5.1, 3.5, 1.4, 0.2]]},
            headers={"X-Turnout-Alias": ALIAS},
        )
        assert reply.status == 200, reply.body
        request_ids.append(reply.headers["X-Request-Id"])
    cloudwatch = cloudwatch_client(dev_stack.endpoint_url)
    now = datetime.now(UTC)

    def requests() -> list[dict[str, Any]]:
        datapoints: list[dict[str, Any]] = cloudwatch.get_metric_statistics(
            Namespace="Turnout",
            MetricName="Requests",
            # All of a dimension set: moto matches any metric that has these,
            # CloudWatch only those with exactly these.
            Dimensions=[
                {"Name": "Model", "Value": "iris"},
                {"Name": "Alias", "Value": ALIAS},
                {"Name": "Version", "Value": "2"},
            ],
            StartTime=now - timedelta(minutes=5),
            EndTime=now + timedelta(minutes=5),
            Period=600,
            Statistics=["Sum"],
        )["Datapoints"]
        return datapoints

    def total() -> float:
        counted: float = sum(point["Sum"] for point in requests())
        return counted

    eventually(
        lambda: total() >= 2,
        message=lambda: f"Requests in CloudWatch: still {requests()!r}",
    )
    assert total() == 2

    endpoint = ["--endpoint-url", dev_stack.endpoint_url]
    result = CliRunner().invoke(
        cli, [*endpoint, "--json", "metrics", "iris", "--alias", ALIAS]
    )
    assert result.exit_code == 0, result.output
    (figures,) = json.loads(result.stdout)
    assert (figures["version"], figures["requests"], figures["error_rate"]) == (
        2,
        2,
        0.0,
    )
    assert figures["latency_mean_ms"] > 0
