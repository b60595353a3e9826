"""``turnout metrics`` over CloudWatch (moto), fed the way the dev stack feeds it:
the app's EMF lines forwarded with put_metric_data, as CloudWatch Logs does."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from chalice.test import Client
from click.testing import CliRunner

from chalicelib import wiring
from chalicelib.aliases.document import Shadow
from chalicelib.aliases.store import AliasStore
from tests.demo_support import MODEL_BUCKET
from tests.emf_support import emf_lines
from tests.functional.rest_support import (
    IRIS_ROWS,
    post_json,
    v2_request,
)
from tools.emf_forward import forward
from turnout.cli import main as cli_module

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def turnout_metrics(monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    cloudwatch = boto3.client("cloudwatch")
    monkeypatch.setattr(cli_module, "cloudwatch_client", lambda url: cloudwatch)
    result = CliRunner().invoke(cli_module.cli, ["--json", "metrics", *args])
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return json.loads(result.stdout)


def test_metrics_per_version_from_the_forwarded_lines(
    client: Client,
    aliases: AliasStore,
    s3: S3Client,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aliases.set_routing("iris", "prod", {1: 100}, shadow=Shadow(2, 100), actor="t")
    capsys.readouterr()
    for _ in range(3):
        answered = post_json(client, "/models/iris/predict", {"instances": IRIS_ROWS})
        assert answered.status_code == 200
    refused = post_json(client, "/models/iris/predict", {"instances": [[1.0]]})
    assert refused.status_code == 400
    for _ in range(2):
        response = post_json(
            client, "/v2/models/iris/versions/2/infer", v2_request(IRIS_ROWS)
        )
        assert response.status_code == 200
    wiring.container().wait_for_background_work()
    lines = capsys.readouterr().out.splitlines()
    documents = emf_lines("\n".join(lines))
    assert forward(lines, boto3.client("cloudwatch")) > 0
    latencies = [d["Latency"] for d in documents if d["event"] == "prediction"]
    shadows = [d for d in documents if d["event"] == "shadow"]
    assert len(shadows) == 3
    agreement = 100 - sum(d["ShadowDisagreement"] for d in shadows) / 3

    by_alias = turnout_metrics(monkeypatch, "iris", "--alias", "prod")
    means = [f.pop("latency_mean_ms") for f in by_alias]
    assert means == [pytest.approx(sum(latencies[:4]) / 4), None]
    assert by_alias == [
        {
            "version": 1,
            "requests": 4,
            "error_rate": 0.25,
            "latency_p50_ms": None,  # moto computes no percentiles
            "latency_p99_ms": None,
            "shadow_runs": 0,
            "shadow_agreement": None,
        },
        {
            "version": 2,
            "requests": 0,
            "error_rate": None,
            "latency_p50_ms": None,
            "latency_p99_ms": None,
            "shadow_runs": 3,
            "shadow_agreement": pytest.approx(agreement),
        },
    ]
    overall = turnout_metrics(monkeypatch, "iris")
    assert [(f["version"], f["requests"], f["shadow_runs"]) for f in overall] == [
        (1, 4, 0),
        (2, 2, 3),
    ]
    assert overall[1]["latency_mean_ms"] == pytest.approx(sum(latencies[-2:]) / 2)
    assert turnout_metrics(monkeypatch, "diabetes") == []


def test_metrics_for_people_are_a_table(
    s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloudwatch = boto3.client("cloudwatch")
    forward(
        [
            json.dumps(
                {
                    "_aws": {
                        "Timestamp": int(time.time() * 1000),
                        "CloudWatchMetrics": [
                            {
                                "Namespace": "Turnout",
                                "Dimensions": [["Model", "Version"]],
                                "Metrics": [
                                    {"Name": "Requests", "Unit": "Count"},
                                    {"Name": "ServerErrors", "Unit": "Count"},
                                    {"Name": "Latency", "Unit": "Milliseconds"},
                                ],
                            }
                        ],
                    },
                    "Model": "iris",
                    "Version": "3",
                    "Requests": 1,
                    "ServerErrors": error,
                    "Latency": latency,
                }
            )
            for error, latency in ((0, 1.0), (1, 2.0), (0, 3.0), (0, 6.0))
        ],
        cloudwatch,
    )
    monkeypatch.setattr(cli_module, "cloudwatch_client", lambda url: cloudwatch)
    result = CliRunner().invoke(cli_module.cli, ["metrics", "iris", "--since", "30m"])
    assert result.stdout.splitlines() == [
        "VERSION  REQUESTS  ERRORS  MEAN_MS  P50_MS  P99_MS  SHADOW  AGREEMENT",
        "3        4         25%     3.000    -       -       0       -",
    ]
    refused = CliRunner().invoke(cli_module.cli, ["metrics", "iris", "--since", "1y"])
    assert refused.exit_code == 2
    assert "'1y' is not a duration like 30m, 12h, 1d or 2w" in refused.stderr


def test_metrics_of_an_unknown_model_say_so_and_name_the_models(
    s3: S3Client, demo_registry: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloudwatch = boto3.client("cloudwatch")
    monkeypatch.setattr(cli_module, "cloudwatch_client", lambda url: cloudwatch)
    monkeypatch.setattr(cli_module, "s3_client", lambda url: s3)

    def metrics(name: str) -> Any:
        return CliRunner().invoke(
            cli_module.cli, ["--bucket", MODEL_BUCKET, "metrics", name]
        )

    unknown, quiet = metrics("rose"), metrics("iris")

    assert (unknown.exit_code, unknown.stdout) == (1, "")
    assert unknown.stderr == ("error: model 'rose' not found; models: diabetes, iris\n")
    assert (quiet.exit_code, quiet.stdout) == (
        0,
        "no metrics for iris in that window\n",
    )
