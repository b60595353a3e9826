"""Open Inference Protocol (V2) routes through the Chalice app, S3 through moto."""

from __future__ import annotations

import json

import numpy as np
import pytest
from chalice.test import Client

from chalicelib import predictor as predict_module
from chalicelib import wiring
from chalicelib.aliases.store import AliasStore
from chalicelib.sessions import open_session
from tests.demo_support import MODELS
from tests.functional.rest_support import (
    IRIS_ROWS,
    post_json,
    served_by,
    serving_client,
    v2_request,
)


def run_directly(filename: str, rows: list[list[float]]) -> list[np.ndarray]:
    """What a bare onnxruntime session answers, to compare with."""
    session = open_session(str(MODELS / filename))
    return list(session.run(None, {"float_input": np.array(rows, dtype=np.float32)}))


IRIS_SIGNATURE = {
    "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ],
}


# -- health and metadata ---------------------------------------------------------------


def test_live_answers(client: Client) -> None:
    response = client.http.get("/v2/health/live")
    assert (response.status_code, response.json_body) == (200, {"live": True})
    assert response.headers["Content-Type"] == "application/json"


def test_ready_answers_when_configured(client: Client) -> None:
    response = client.http.get("/v2/health/ready")
    assert (response.status_code, response.json_body) == (200, {"ready": True})


def test_ready_is_503_without_a_model_bucket(request: pytest.FixtureRequest) -> None:
    for client in serving_client(request, model_bucket=""):
        response = client.http.get("/v2/health/ready")
        assert response.status_code == 503
        assert response.json_body == {
            "ready": False,
            "error": "TURNOUT_MODEL_BUCKET is unset",
        }


def test_server_metadata_names_the_binary_extension(client: Client) -> None:
    response = client.http.get("/v2")
    assert response.status_code == 200
    assert response.json_body == {
        "name": "turnout",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }


def test_get_routes_ignore_the_content_type(client: Client) -> None:
    response = client.http.get("/v2", headers={"Content-Type": "text/plain"})
    assert response.status_code == 200


def test_model_metadata_describes_the_default_alias_heaviest_version(
    client: Client,
) -> None:
    response = client.http.get("/v2/models/iris")
    assert response.status_code == 200
    assert served_by(response) == ("iris", "1", "prod")
    assert response.json_body == {
        "name": "iris",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        **IRIS_SIGNATURE,
    }


def test_model_metadata_follows_the_alias_asked_for(
    client: Client, aliases: AliasStore
) -> None:
    aliases.set_routing("iris", "canary", {2: 100}, actor="tests")
    response = client.http.get("/v2/models/iris?alias=canary")
    assert served_by(response) == ("iris", "2", "canary")


def test_version_metadata_names_that_version(client: Client) -> None:
    response = client.http.get("/v2/models/iris/versions/2")
    assert response.status_code == 200
    assert served_by(response) == ("iris", "2", "")
    assert response.json_body["inputs"] == IRIS_SIGNATURE["inputs"]


def test_regressor_metadata(client: Client) -> None:
    response = client.http.get("/v2/models/diabetes")
    assert response.json_body["inputs"] == [
        {"name": "float_input", "datatype": "FP32", "shape": [-1, 10]}
    ]
    assert response.json_body["outputs"] == [
        {"name": "variable", "datatype": "FP32", "shape": [-1, 1]}
    ]


METADATA_REFUSALS = [
    ("/v2/models/nope", 404, "model 'nope' not found"),
    ("/v2/models/iris/versions/7", 404, "model 'iris' has no version 7"),
    ("/v2/models/nope/versions/1", 404, "model 'nope' not found"),
    ("/v2/models/iris?alias=gone", 404, "model 'iris' has no alias 'gone'"),
    ("/v2/models/iris/ready?alias=gone", 404, "model 'iris' has no alias 'gone'"),
    ("/v2/models/iris/versions/7/ready", 404, "model 'iris' has no version 7"),
    (
        "/v2/models/iris/versions/one",
        400,
        "invalid version name 'one': a version is a positive integer",
    ),
    (
        "/v2/models/Iris",
        400,
        "invalid model name 'Iris': use lowercase letters, digits, '-', '_' "
        "and '.', starting with a letter or digit",
    ),
]


def test_metadata_refusals(client: Client) -> None:
    answers = [client.http.get(path) for path, _, _ in METADATA_REFUSALS]
    assert [(answer.status_code, answer.json_body) for answer in answers] == [
        (status, {"error": error}) for _, status, error in METADATA_REFUSALS
    ]


def test_model_ready_loads_every_version_the_alias_weighs(client: Client) -> None:
    response = client.http.get("/v2/models/iris/ready")
    assert (response.status_code, response.json_body) == (
        200,
        {"name": "iris", "ready": True},
    )
    assert served_by(response) == ("iris", "1", "prod")
    assert wiring.predictor().models.cached() == [("iris", 1), ("iris", 2)]


def test_version_ready_loads_that_version(client: Client) -> None:
    response = client.http.get("/v2/models/iris/versions/2/ready")
    assert response.status_code == 200
    assert served_by(response) == ("iris", "2", "")
    assert wiring.predictor().models.cached() == [("iris", 2)]


# -- inference -------------------------------------------------------------------------


def test_infer_on_a_version_answers_the_v2_response(client: Client) -> None:
    response = post_json(
        client, "/v2/models/iris/versions/2/infer", v2_request(IRIS_ROWS, id="req-7")
    )
    assert response.status_code == 200
    assert served_by(response) == ("iris", "2", "")
    body = response.json_body
    label, probabilities = run_directly("iris-v2.onnx", IRIS_ROWS)
    assert {key: body[key] for key in ("model_name", "model_version", "id")} == {
        "model_name": "iris",
        "model_version": "2",
        "id": "req-7",
    }
    assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [
        ("label", "INT64", [2]),
        ("probabilities", "FP32", [2, 3]),
    ]
    assert body["outputs"][0]["data"] == label.tolist()
    np.testing.assert_allclose(body["outputs"][1]["data"], probabilities.ravel())


def test_infer_through_the_alias_names_who_answered(client: Client) -> None:
    response = post_json(client, "/v2/models/iris/infer", v2_request(IRIS_ROWS))
    assert response.status_code == 200
    name, version, alias = served_by(response)
    assert (name, alias) == ("iris", "prod")
    assert response.json_body["model_version"] == version
    assert "id" not in response.json_body


def test_flat_and_nested_data_agree(client: Client) -> None:
    flat = v2_request(IRIS_ROWS)
    flat["inputs"][0]["data"] = [value for row in IRIS_ROWS for value in row]
    answers = [
        post_json(client, "/v2/models/iris/versions/1/infer", document).json_body
        for document in (flat, v2_request(IRIS_ROWS))
    ]
    assert answers[0] == answers[1]


def test_infer_returns_only_the_outputs_asked_for(client: Client) -> None:
    document = v2_request(IRIS_ROWS, outputs=[{"name": "probabilities"}])
    response = post_json(client, "/v2/models/iris/versions/1/infer", document)
    assert [output["name"] for output in response.json_body["outputs"]] == [
        "probabilities"
    ]


def test_unknown_parameters_are_ignored(client: Client) -> None:
    document = v2_request(
        IRIS_ROWS, parameters={"priority": 3, "binary_data_output": True}
    )
    document["inputs"][0]["parameters"] = {"content_type": "np"}
    document["outputs"] = [{"name": "label", "parameters": {"binary_data": True}}]
    response = post_json(client, "/v2/models/iris/versions/1/infer", document)
    assert response.status_code == 200
    assert response.json_body["outputs"][0]["data"] == [0, 2]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "application/json; charset=utf-8"}],
    ids=["no content type", "charset"],
)
def test_json_is_read_without_or_with_parameters_in_the_content_type(
    client: Client, headers: dict[str, str]
) -> None:
    response = client.http.post(
        "/v2/models/iris/versions/1/infer",
        body=json.dumps(v2_request(IRIS_ROWS)).encode(),
        headers=headers,
    )
    assert response.status_code == 200


def test_regressor_infer(client: Client) -> None:
    rows = [[0.01 * (i + j) for i in range(10)] for j in range(3)]
    response = post_json(client, "/v2/models/diabetes/infer", v2_request(rows))
    assert response.status_code == 200
    (output,) = response.json_body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "variable",
        "FP32",
        [3, 1],
    )
    (expected,) = run_directly("diabetes.onnx", rows)
    np.testing.assert_allclose(output["data"], expected.ravel(), rtol=1e-6)


# -- binary tensor data extension ------------------------------------------------------


def binary_request(
    rows: list[list[float]], *, size: int | None = None, extra: bytes = b""
) -> tuple[bytes, dict[str, str]]:
    """A request whose input travels as binary data after the JSON header."""
    data = np.array(rows, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "float_input",
                    "shape": [len(rows), 4],
                    "datatype": "FP32",
                    "parameters": {
                        "binary_data_size": len(data) if size is None else size
                    },
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + data + extra, headers


def test_binary_tensor_data_is_decoded(client: Client) -> None:
    body, headers = binary_request(IRIS_ROWS)
    response = client.http.post(
        "/v2/models/iris/versions/1/infer", body=body, headers=headers
    )
    assert response.status_code == 200
    as_json = post_json(
        client, "/v2/models/iris/versions/1/infer", v2_request(IRIS_ROWS)
    )
    assert response.json_body == as_json.json_body


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            {"Inference-Header-Content-Length": "ten"},
            "Inference-Header-Content-Length: 'ten' is not a byte count",
        ),
        (
            {"Inference-Header-Content-Length": "100000"},
            "Inference-Header-Content-Length: 100000 bytes, but the body has {size}",
        ),
        (
            {"Inference-Header-Content-Length": None},
            "body: not UTF-8 text (binary tensor data needs the "
            "Inference-Header-Content-Length header)",
        ),
    ],
    ids=["not a number", "beyond the body", "header missing"],
)
def test_malformed_binary_header_is_400(
    client: Client, change: dict[str, str | None], error: str
) -> None:
    body, headers = binary_request(IRIS_ROWS)
    for key, value in change.items():
        if value is None:
            del headers[key]
        else:
            headers[key] = value
    response = client.http.post(
        "/v2/models/iris/versions/1/infer", body=body, headers=headers
    )
    assert response.status_code == 400
    assert response.json_body == {"error": error.format(size=len(body))}


def test_binary_size_beyond_the_body_is_400(client: Client) -> None:
    body, headers = binary_request(IRIS_ROWS, size=64)
    response = client.http.post(
        "/v2/models/iris/versions/1/infer", body=body, headers=headers
    )
    assert response.status_code == 400
    assert response.json_body == {
        "error": "inputs[0].parameters.binary_data_size: 64 bytes, but only 32 "
        "bytes of binary data are left in the body"
    }


def test_binary_data_nobody_claims_is_400(client: Client) -> None:
    body, headers = binary_request(IRIS_ROWS, extra=b"\x00" * 3)
    response = client.http.post(
        "/v2/models/iris/versions/1/infer", body=body, headers=headers
    )
    assert response.status_code == 400
    assert response.json_body == {
        "error": "body: 3 bytes of binary data after the JSON header belong to no "
        "input (parameters.binary_data_size)"
    }


def test_binary_size_that_does_not_fit_the_shape_is_400(client: Client) -> None:
    body, headers = binary_request(IRIS_ROWS, size=16, extra=b"")
    # 16 of the 32 bytes claimed: the other 16 are left over, so drop them.
    body = body[:-16]
    response = client.http.post(
        "/v2/models/iris/versions/1/infer", body=body, headers=headers
    )
    assert response.status_code == 400
    assert response.json_body == {
        "error": "inputs[0].parameters.binary_data_size: 16 bytes, shape [2, 4] of "
        "FP32 needs 32"
    }


def test_decoded_inputs_are_not_checked_again_by_the_core(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[object] = []
    monkeypatch.setattr(
        predict_module, "check_inputs", lambda *args: checked.append(args)
    )
    response = post_json(client, "/v2/models/iris/infer", v2_request(IRIS_ROWS))
    assert response.status_code == 200
    assert checked == []  # the decoder's CheckedInputs are trusted
    prediction = wiring.predictor()
    target = prediction.resolve("iris", version=1)
    prediction.run(target, {"float_input": np.zeros((1, 4), np.float32)})
    assert len(checked) == 1  # a plain dict is checked
