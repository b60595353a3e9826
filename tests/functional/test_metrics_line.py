"""Each prediction request writes one EMF line to stdout, where Lambda's runtime
sends it to CloudWatch Logs: the metrics and the prediction log in one write."""

from __future__ import annotations

import hashlib
import json

import pytest
from chalice.test import Client

from chalicelib import wiring
from chalicelib.aliases.document import Shadow
from chalicelib.aliases.store import AliasStore
from tests.emf_support import emf_lines
from tests.functional.rest_support import (
    IRIS_ROWS,
    post_json,
    v2_request,
)


def test_each_prediction_writes_one_line_of_metrics_and_log_fields(
    client: Client, aliases: AliasStore, capsys: pytest.CaptureFixture[str]
) -> None:
    aliases.set_routing("iris", "prod", {2: 100}, actor="tests")
    capsys.readouterr()
    response = post_json(client, "/v2/models/iris/infer", v2_request(IRIS_ROWS))
    assert response.status_code == 200
    (line,) = emf_lines(capsys.readouterr().out)
    directive = line.pop("_aws")["CloudWatchMetrics"]
    assert directive[0]["Dimensions"] == [
        ["Model", "Version"],
        ["Model", "Alias"],
        ["Model", "Alias", "Version"],
    ]
    assert line.pop("Latency") >= line.pop("ModelLatency") > 0
    assert line == {
        "Model": "iris",
        "Version": "2",
        "Alias": "prod",
        "Requests": 1,
        "Rows": 2,
        "ClientErrors": 0,
        "ServerErrors": 0,
        "Predicted_0": 1,
        "Predicted_2": 1,
        "event": "prediction",
        "source": "rest",
        "request_id": response.headers["X-Request-Id"],
        "status": 200,
        "outcome": "ok",
        "routing_key_hash": None,
        "shadow_version": None,
        "error": None,
    }


def test_a_refusal_is_counted_against_the_version_whose_signature_refused_it(
    client: Client, aliases: AliasStore, capsys: pytest.CaptureFixture[str]
) -> None:
    aliases.set_routing("iris", "prod", {2: 100}, actor="tests")
    capsys.readouterr()
    response = post_json(
        client,
        "/models/iris/predict",
        {"instances": [[1.0, 2.0, 3.0]]},
        headers={"X-Routing-Key": "user-42"},
    )
    assert response.status_code == 400
    out = capsys.readouterr().out
    (line,) = emf_lines(out)
    assert {
        key: line[key]
        for key in ("Version", "status", "outcome", "Rows", "ClientErrors")
    } == {"Version": "2", "status": 400, "outcome": "client_error", "Rows": 0,
          "ClientErrors": 1}  # fmt: skip
    assert line["error"] == json.loads(response.body)["error"]
    # The key may be a user id: only its hash is written.
    assert "user-42" not in out
    assert line["routing_key_hash"] == hashlib.sha256(b"user-42").hexdigest()[:16]


def test_a_shadow_comparison_writes_its_own_line_after_the_answer(
    client: Client, aliases: AliasStore, capsys: pytest.CaptureFixture[str]
) -> None:
    aliases.set_routing("iris", "prod", {1: 100}, shadow=Shadow(2, 100), actor="tests")
    capsys.readouterr()
    response = post_json(client, "/models/iris/predict", {"instances": IRIS_ROWS})
    assert response.status_code == 200
    wiring.container().wait_for_background_work()
    (prediction, shadow) = emf_lines(capsys.readouterr().out)
    request_id = response.headers["X-Request-Id"]
    assert (prediction["event"], prediction["request_id"]) == ("prediction", request_id)
    assert (prediction["Version"], prediction["shadow_version"]) == ("1", 2)
    assert {
        key: shadow[key]
        for key in (
            "event",
            "request_id",
            "Version",
            "primary_version",
            "ShadowErrors",
            "ShadowDisagreement",
        )
    } == {
        "event": "shadow",
        "request_id": request_id,
        "Version": "2",
        "primary_version": 1,
        "ShadowErrors": 0,
        "ShadowDisagreement": 0.0,
    }
    assert shadow["ShadowLatency"] > 0
