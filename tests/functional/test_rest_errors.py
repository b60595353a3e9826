"""Refusals over HTTP: each gets its status code and a JSON error naming the problem;
anything unexpected a bare 500 that leaks nothing."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from chalice.test import Client, HTTPResponse

from chalicelib.config import MIB
from chalicelib.predictor import Predictor
from tests.functional.rest_support import (
    IRIS_ROWS,
    post_json,
    serving_client,
    v2_request,
)

BINARY_HINT = " (binary tensor data needs the Inference-Header-Content-Length header)"
ROUTES = [
    "/v2/models/iris/infer",
    "/v2/models/iris/versions/1/infer",
    "/models/iris/predict",
]


def refusal(response: HTTPResponse) -> tuple[int, str]:
    return response.status_code, response.json_body["error"]


def valid_body(path: str) -> bytes:
    document = {"instances": IRIS_ROWS} if "predict" in path else v2_request(IRIS_ROWS)
    return json.dumps(document).encode()


def test_a_content_type_we_do_not_read_is_415(client: Client) -> None:
    # Chalice would answer these itself with {"Code", "Message"}: the routes take
    # every type, and the handlers refuse with the protocol's JSON error.
    types = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
    answers = [
        refusal(
            client.http.post(
                path, body=valid_body(path), headers={"Content-Type": kind}
            )
        )
        for path in ROUTES
        for kind in types
    ]
    assert answers == [
        (
            415,
            f"content type {kind!r} is not supported; send one of "
            "application/json, application/octet-stream",
        )
        for _ in ROUTES
        for kind in types
    ]


def test_a_body_over_6_mib_is_413_before_it_is_read(client: Client) -> None:
    body = b"{" * (6 * MIB + 1)  # not even JSON: the size is checked first
    answers = [refusal(client.http.post(path, body=body)) for path in ROUTES]
    assert answers == [
        (413, "request body is 6291457 bytes, over the limit of 6291456 bytes")
    ] * len(ROUTES)


def test_more_instances_than_the_row_limit_is_413(client: Client) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2]] * 10_001
    response = post_json(client, "/models/iris/predict", {"instances": rows})
    assert response.status_code == 413
    assert response.json_body == {
        "error": "instances: 10001 rows, over the limit of 10000 per request "
        "(TURNOUT_MAX_ROWS): split the request, or run a batch job"
    }


def test_more_v2_rows_than_the_limit_is_413(request: pytest.FixtureRequest) -> None:
    for client in serving_client(request, max_rows=1):
        response = post_json(client, "/v2/models/iris/infer", v2_request(IRIS_ROWS))
        assert response.status_code == 413
        assert response.json_body == {
            "error": "inputs[0].shape: 2 rows, over the limit of 1 per request "
            "(TURNOUT_MAX_ROWS): split the request, or run a batch job"
        }


MALFORMED = [
    (b"", "body: empty; send a JSON object"),
    (b'{"inputs": [', "body: malformed JSON: Expecting value at line 1 column 13"),
    (
        b"{'a': 1}",
        "body: malformed JSON: Expecting property name enclosed in "
        "double quotes at line 1 column 2",
    ),
    (b'{"a": "\xc3\x28"}', "body: not UTF-8 text{hint}"),
]


@pytest.mark.parametrize("path", ROUTES)
def test_malformed_json_is_400(client: Client, path: str) -> None:
    headers = {"Content-Type": "application/json"}
    answers = [
        refusal(client.http.post(path, body=body, headers=headers))
        for body, _ in MALFORMED
    ]
    # V2 bodies may carry binary data: their refusal says what that needs.
    hint = "" if "predict" in path else BINARY_HINT
    assert answers == [(400, error.format(hint=hint)) for _, error in MALFORMED]


def tensor(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "float_input",
        "shape": [2, 4],
        "datatype": "FP32",
        "data": IRIS_ROWS,
    }
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not None}


BAD_V2 = [
    ([1, 2], 'body: expected a JSON object {"inputs": [...]}'),
    ({"inputs": []}, "inputs: expected a non-empty list of tensors"),
    (
        {"inputs": [tensor(name="petals")]},
        "inputs[0].name: unknown input 'petals'; the model takes float_input",
    ),
    (
        {"inputs": [tensor(name=None)]},
        "inputs[0].name: missing; give the input's name",
    ),
    (
        {"inputs": [tensor(datatype="FP64")]},
        "inputs[0].datatype: FP64, model expects FP32",
    ),
    (
        {"inputs": [tensor(datatype="FLOAT")]},
        "inputs[0].datatype: unknown "
        "datatype 'FLOAT'; use one of BOOL, INT8, INT16, INT32, INT64, UINT8, "
        "UINT16, UINT32, UINT64, FP16, FP32, FP64, BYTES",
    ),
    (
        {"inputs": [tensor(shape=[2, 3])]},
        "inputs[0].shape: [2, 3] has 3 values per row, model expects 4",
    ),
    (
        {"inputs": [tensor(shape=[8])]},
        "inputs[0].shape: [8] has 1 dimension, model expects 2 [-1, 4]",
    ),
    (
        {"inputs": [tensor(shape=[3, 4])]},
        "inputs[0].data: 8 values, shape [3, 4] needs 12",
    ),
    (
        {"inputs": [tensor(data=[[1, 2, 3], [4, 5, 6]])]},
        "inputs[0].data: 3 values per row, model expects 4",
    ),
    (
        {"inputs": [tensor(data=[[1, 2, 3, 4], [5, 6, 7]])]},
        "inputs[0].data: nested lists of different lengths",
    ),
    (
        {"inputs": [tensor(data=[[1, 2, 3, 4], [5, 6, 7, float("nan")]])]},
        "inputs[0].data: NaN is not a finite number; this model does not take "
        "NaN or Infinity",
    ),
    (
        {"inputs": [tensor(data=[[1, 2, 3, 4], [5, 6, 7, 1e39]])]},
        "inputs[0].data: 1e+39 is out of range for FP32",
    ),
    (
        {"inputs": [tensor(data=[[True] * 4] * 2)]},
        "inputs[0].data: true is not a number, model expects FP32",
    ),
    ({"inputs": [tensor(data=None)]}, "inputs[0].data: missing"),
    ({"inputs": [tensor(), tensor()]}, "inputs[1].name: 'float_input' given twice"),
    (
        {"inputs": [tensor()], "outputs": [{"name": "nope"}]},
        "outputs[0].name: unknown output 'nope'; the model has label, probabilities",
    ),
    ({"inputs": [tensor()], "id": 7}, "id: expected a string"),
    ({"inputs": [tensor()], "parameters": [1]}, "parameters: expected an object"),
    (
        {"inputs": [tensor()], "parameters": {"routing_key": [1]}},
        "parameters.routing_key: expected a string",
    ),
    (
        {"inputs": [tensor(parameters={"binary_data_size": 32})]},
        "inputs[0]: give data or parameters.binary_data_size, not both",
    ),
    (
        {"inputs": [tensor(data=None, parameters={"binary_data_size": 32})]},
        "inputs[0].parameters.binary_data_size: given, but the request has no "
        "Inference-Header-Content-Length header to say where the binary data "
        "starts",
    ),
]


def test_bad_v2_requests_are_400(client: Client) -> None:
    path = "/v2/models/iris/versions/1/infer"
    answers = [refusal(post_json(client, path, document)) for document, _ in BAD_V2]
    assert answers == [(400, error) for _, error in BAD_V2]


def test_an_unexpected_failure_is_a_bare_500_that_is_logged(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret: arn:aws:s3:::turnout-models-dev")

    monkeypatch.setattr(Predictor, "run", explode)
    response = post_json(client, "/v2/models/iris/infer", v2_request(IRIS_ROWS))
    assert (response.status_code, response.json_body) == (
        500,
        {"error": "internal error"},
    )
    assert b"secret" not in response.body
    (record,) = [r for r in caplog.records if r.name == "turnout.rest"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "secret" in str(record.exc_info[1])
    assert response.headers["X-Request-Id"] in record.getMessage()


def test_errors_carry_the_request_id(client: Client) -> None:
    response = client.http.get("/v2/models/nope")
    assert response.status_code == 404
    assert len(response.headers["X-Request-Id"]) == 32


def test_an_unknown_route_and_a_wrong_method_answer_as_api_gateway_does(
    client: Client,
) -> None:
    # docs/api.md says so: these two never reach Turnout's handlers.
    unknown = client.http.get("/v2/nothing/here")
    assert (unknown.status_code, json.loads(unknown.body)) == (
        403,
        {"message": "Missing Authentication Token"},
    )
    wrong_method = client.http.get("/models/iris/predict")
    assert (wrong_method.status_code, json.loads(wrong_method.body)) == (
        405,
        {"Code": "MethodNotAllowedError", "Message": "Unsupported method: GET"},
    )
