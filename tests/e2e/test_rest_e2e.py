"""The REST API over real HTTP: chalice local on the dev stack, models in the
moto server's S3, registered and routed by the registry library."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.e2e_support import HttpClient, Reply, eventually
from tools.devstack.stack import DevStack

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


def v2_request(*rows: list[float], **fields: Any) -> dict[str, Any]:
    tensor = {"name": "float_input", "shape": [len(rows), 4], "datatype": "FP32"}
    data = [value for row in rows for value in row]
    return {"inputs": [{**tensor, "data": data}], **fields}


def served_by(reply: Reply) -> tuple[str, str, str]:
    headers = reply.headers
    return (
        headers["X-Model-Name"],
        headers["X-Model-Version"],
        headers["X-Model-Alias"],
    )


def test_health_says_live_and_ready(api: HttpClient) -> None:
    live, ready = api.get("/v2/health/live"), api.get("/v2/health/ready")

    assert (live.status, live.json()) == (200, {"live": True})
    assert (ready.status, ready.json()) == (200, {"ready": True})


def test_model_metadata_lists_the_versions_and_the_signature(api: HttpClient) -> None:
    reply = api.get("/v2/models/iris")

    assert reply.status == 200
    assert reply.json() == {
        "name": "iris",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    # The default alias (prod = 1: 90, 2: 10) speaks through its heaviest version.
    assert served_by(reply) == ("iris", "1", "prod")


def test_v2_infer_through_the_alias_header(api: HttpClient) -> None:
    reply = api.post_json(
        "/v2/models/iris/infer",
        v2_request(SETOSA, VIRGINICA, id="request-7"),
        headers={"X-Turnout-Alias": "staging"},
    )

    assert reply.status == 200, reply.body
    assert served_by(reply) == ("iris", "2", "staging")
    body = reply.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (
        "iris",
        "2",
        "request-7",
    )
    label, probabilities = body["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    assert (probabilities["name"], probabilities["shape"]) == ("probabilities", [2, 3])
    assert sum(probabilities["data"][:3]) == pytest.approx(1.0, abs=1e-5)


def test_v2_infer_reads_a_body_without_content_type_and_parameters_alias(
    api: HttpClient,
) -> None:
    reply = api.post_json(
        "/v2/models/iris/infer",
        v2_request(SETOSA, parameters={"alias": "staging", "unknown": 1}),
        headers={"Content-Type": ""},
    )

    assert reply.status == 200, reply.body
    assert served_by(reply) == ("iris", "2", "staging")
    assert reply.json()["model_version"] == "2"


def test_a_version_in_the_path_answers_without_an_alias(api: HttpClient) -> None:
    reply = api.post_json("/v2/models/iris/versions/1/infer", v2_request(SETOSA))

    assert reply.status == 200, reply.body
    assert served_by(reply) == ("iris", "1", "")
    assert reply.json()["model_version"] == "1"


def test_a_routing_key_always_gets_the_same_version(api: HttpClient) -> None:
    for key in ("customer-1", "customer-2", "customer-3"):
        versions = {
            served_by(
                api.post_json(
                    "/v2/models/iris/infer",
                    v2_request(SETOSA),
                    headers={"X-Routing-Key": key},
                )
            )[1]
            for _ in range(3)
        }
        assert len(versions) == 1, (key, versions)


def test_instances_predict_answers_labels_and_probabilities(api: HttpClient) -> None:
    reply = api.post_json(
        "/models/iris/predict",
        {"instances": [SETOSA, VIRGINICA]},
        headers={"X-Turnout-Alias": "staging"},
    )

    assert reply.status == 200, reply.body
    body = reply.json()
    assert (body["model"], body["version"], body["alias"]) == ("iris", 2, "staging")
    assert [p["label"] for p in body["predictions"]] == ["setosa", "virginica"]
    first = body["predictions"][0]["probabilities"]
    assert sorted(first) == ["setosa", "versicolor", "virginica"]
    assert sum(first.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "error"),
    [
        (
            "/v2/models/iris/infer",
            b'{"inputs": [{',
            {"Content-Type": "application/json"},
            400,
            None,
        ),
        (
            "/v2/models/iris/infer",
            b'{"inputs": [{"name": "float_input", "shape": [1, 3], '
            b'"datatype": "FP32", "data": [5.1, 3.5, 1.4]}]}',
            {"Content-Type": "application/json"},
            400,
            None,
        ),
        (
            "/v2/models/nope/infer",
            b'{"inputs": [{"name": "float_input", "shape": [1, 4], '
            b'"datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}',
            {"Content-Type": "application/json"},
            404,
            "model 'nope' not found",
        ),
        (
            "/v2/models/iris/versions/9/infer",
            b'{"inputs": [{"name": "float_input", "shape": [1, 4], '
            b'"datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}',
            {"Content-Type": "application/json"},
            404,
            "model 'iris' has no version 9",
        ),
        (
            "/models/iris/predict",
            b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}',
            {"Content-Type": "application/json", "X-Turnout-Alias": "nope"},
            404,
            "model 'iris' has no alias 'nope'",
        ),
        (
            "/models/iris/predict",
            b"instances=1",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            None,
        ),
    ],
    ids=[
        "malformed-json",
        "three-features",
        "unknown-model",
        "unknown-version",
        "unknown-alias",
        "form-content-type",
    ],
)
def test_a_bad_request_gets_a_json_4xx_naming_the_problem(
    api: HttpClient,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    error: str | None,
) -> None:
    reply = api.request("POST", path, body=body, headers=headers)

    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    message = reply.json()["error"]
    assert isinstance(message, str) and message
    if error is not None:
        assert message == error


def test_an_alias_change_is_served_once_the_cache_expires(
    dev_stack: DevStack, api: HttpClient
) -> None:
    def version_served() -> str:
        reply = api.post_json(
            "/v2/models/iris/infer",
            v2_request(SETOSA),
            headers={"X-Turnout-Alias": "e2e-flip"},
        )
        assert reply.status == 200, reply.body
        return served_by(reply)[1]

    dev_stack.aliases.set_routing("iris", "e2e-flip", {1: 100}, actor="e2e")
    assert version_served() == "1"

    dev_stack.aliases.set_routing("iris", "e2e-flip", {2: 100}, actor="e2e")
    changed = time.monotonic()
    # The dev stage trusts a cached alias for TURNOUT_ALIAS_CACHE_SECONDS (2 s).
    eventually(
        lambda: version_served() == "2",
        timeout=dev_stack.alias_cache_seconds + 10.0,
        message="the alias change was never served",
    )
    assert time.monotonic() - changed <= dev_stack.alias_cache_seconds + 10.0
