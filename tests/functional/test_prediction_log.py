"""The core's log records reach the app's own handler (stdout, on Lambda).

Chalice configures the ``turnout`` logger, parent of ``turnout.predictions``, with
a stdout handler at level ERROR: these tests read what that handler writes, not
what pytest's caplog (a handler of its own) would capture.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.aliases import AliasStore, Shadow
from tests.functional.rest_support import (
    IRIS_ROWS,
    post_json,
    serving_client,
    v2_request,
)

PREFIX = "turnout.predictions - INFO - "


@pytest.fixture
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    yield from serving_client(request)


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    """What the app's stdout handler writes during the test."""
    (handler,) = [h for h in app.log.handlers if type(h) is logging.StreamHandler]
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)


def records(written: io.StringIO) -> list[dict[str, Any]]:
    lines = written.getvalue().splitlines()
    return [
        json.loads(line[len(PREFIX) :]) for line in lines if line.startswith(PREFIX)
    ]


def test_each_prediction_is_written_by_the_app_log_handler(
    client: Client, aliases: AliasStore, written: io.StringIO
) -> None:
    aliases.set_routing("iris", "prod", {2: 100}, actor="tests")
    response = post_json(client, "/v2/models/iris/infer", v2_request(IRIS_ROWS))
    assert response.status_code == 200
    (record,) = records(written)
    assert record.pop("latency_ms") >= record.pop("model_ms") > 0
    assert record == {
        "event": "prediction",
        "source": "rest",
        "request_id": response.headers["X-Request-Id"],
        "model": "iris",
        "version": 2,
        "alias": "prod",
        "rows": 2,
        "status": 200,
        "outcome": "ok",
        "routing_key_hash": None,
        "shadow_version": None,
        "error": None,
    }


def test_a_refusal_is_logged_against_the_version_whose_signature_refused_it(
    client: Client, aliases: AliasStore, written: io.StringIO
) -> None:
    aliases.set_routing("iris", "prod", {2: 100}, actor="tests")
    response = post_json(
        client,
        "/models/iris/predict",
        {"instances": [[1.0, 2.0, 3.0]]},
        headers={"X-Routing-Key": "user-42"},
    )
    assert response.status_code == 400
    (record,) = records(written)
    assert {key: record[key] for key in ("version", "status", "outcome", "rows")} == {
        "version": 2,
        "status": 400,
        "outcome": "client_error",
        "rows": 0,
    }
    assert record["error"] == json.loads(response.body)["error"]
    # The key may be a user id: only its hash is written.
    assert "user-42" not in written.getvalue()
    assert record["routing_key_hash"] == hashlib.sha256(b"user-42").hexdigest()[:16]


def test_a_shadow_comparison_is_written_by_the_app_log_handler(
    client: Client, aliases: AliasStore, written: io.StringIO
) -> None:
    aliases.set_routing("iris", "prod", {1: 100}, shadow=Shadow(2, 100), actor="tests")
    response = post_json(client, "/models/iris/predict", {"instances": IRIS_ROWS})
    assert response.status_code == 200
    wiring.predictor().wait_for_shadows()
    (prediction, shadow) = [
        record
        for record in records(written)
        if record["request_id"] == response.headers["X-Request-Id"]
    ]
    assert (prediction["event"], prediction["shadow_version"]) == ("prediction", 2)
    assert {
        key: shadow[key] for key in ("event", "version", "shadow_version", "ok")
    } == {
        "event": "shadow",
        "version": 1,
        "shadow_version": 2,
        "ok": True,
    }
