"""The simple ``instances`` route through the Chalice app, S3 through moto."""

from __future__ import annotations

import numpy as np
import pytest
from chalice.test import Client

from chalicelib.aliases.store import AliasStore
from chalicelib.sessions import open_session
from tests.demo_support import MODELS
from tests.functional.rest_support import (
    IRIS_ROWS,
    post_json,
    served_by,
)

LABELS = ["setosa", "versicolor", "virginica"]


def test_a_classifier_answers_labels_and_probabilities(
    client: Client, aliases: AliasStore
) -> None:
    aliases.set_routing("iris", "prod", {1: 100}, actor="tests")
    response = post_json(client, "/models/iris/predict", {"instances": IRIS_ROWS})
    assert response.status_code == 200
    assert served_by(response) == ("iris", "1", "prod")
    body = response.json_body
    assert {key: body[key] for key in ("model", "version", "alias")} == {
        "model": "iris",
        "version": 1,
        "alias": "prod",
    }
    session = open_session(str(MODELS / "iris-v1.onnx"))
    _, probabilities = session.run(
        None, {"float_input": np.array(IRIS_ROWS, dtype=np.float32)}
    )
    predictions = body["predictions"]
    assert [prediction["label"] for prediction in predictions] == [
        "setosa",
        "virginica",
    ]
    for prediction, expected in zip(predictions, probabilities, strict=True):
        assert list(prediction["probabilities"]) == LABELS
        np.testing.assert_allclose(
            list(prediction["probabilities"].values()), expected, rtol=1e-6
        )


def test_a_regressor_answers_one_value_per_row(client: Client) -> None:
    rows = [[0.02 * (i - j) for i in range(10)] for j in range(4)]
    response = post_json(client, "/models/diabetes/predict", {"instances": rows})
    assert response.status_code == 200
    assert served_by(response) == ("diabetes", "1", "prod")
    (expected,) = open_session(str(MODELS / "diabetes.onnx")).run(
        None, {"float_input": np.array(rows, dtype=np.float32)}
    )
    predictions = response.json_body["predictions"]
    assert all(isinstance(value, float) for value in predictions)
    np.testing.assert_allclose(predictions, expected[:, 0], rtol=1e-6)


def test_rows_may_be_objects_keyed_by_input_name(client: Client) -> None:
    keyed = [{"float_input": row} for row in IRIS_ROWS]
    as_objects = post_json(client, "/models/iris/predict", {"instances": keyed})
    assert as_objects.status_code == 200
    version = as_objects.headers["X-Model-Version"]
    as_lists = post_json(
        client,
        f"/v2/models/iris/versions/{version}/infer",
        {
            "inputs": [
                {
                    "name": "float_input",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "data": IRIS_ROWS,
                }
            ]
        },
    )
    labels = [LABELS[label] for label in as_lists.json_body["outputs"][0]["data"]]
    assert [p["label"] for p in as_objects.json_body["predictions"]] == labels


@pytest.mark.parametrize(
    ("how", "headers", "path"),
    [
        ("query", {}, "/models/iris/predict?alias=canary"),
        ("header", {"X-Turnout-Alias": "canary"}, "/models/iris/predict"),
    ],
)
def test_an_alias_is_chosen_by_query_or_header(
    client: Client,
    aliases: AliasStore,
    how: str,
    headers: dict[str, str],
    path: str,
) -> None:
    aliases.set_routing("iris", "canary", {2: 100}, actor="tests")
    response = post_json(client, path, {"instances": IRIS_ROWS}, headers)
    assert response.status_code == 200, how
    assert served_by(response) == ("iris", "2", "canary")
    assert response.json_body["alias"] == "canary"


BAD_INSTANCES = [
    (
        {
            "instances": [
                [5.1, 3.5, 1.4, 0.2],
                [6.7, 3.0, 5.2, 2.3],
                [1.0, 2.0, 3.0],
            ]
        },
        "instances[2]: 3 features, model expects 4",
    ),
    (
        {"instances": [[5.1, 3.5, 1.4], [6.7, 3.0, 5.2]]},
        "instances[0]: 3 features, model expects 4",
    ),
    (
        {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, "3.0", 5.2, 2.3]]},
        'instances[1]: "3.0" is not a number, model expects FP32',
    ),
    (
        {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, None]]},
        "instances[1]: null is not a number, model expects FP32",
    ),
    (
        {"instances": [[5.1, 3.5, 1.4, float("nan")]]},
        "instances[0]: NaN is not a finite number; this model does not take "
        "NaN or Infinity",
    ),
    (
        {"instances": [[5.1, 3.5, 1.4, float("inf")]]},
        "instances[0]: Infinity is not a finite number; this model does not "
        "take NaN or Infinity",
    ),
    (
        {"instances": [5.1, 3.5, 1.4, 0.2]},
        "instances[0]: a single value, model expects a row of 4 features",
    ),
    ({"instances": []}, "instances: expected a non-empty list of rows"),
    (
        {"instances": {"float_input": [1, 2, 3, 4]}},
        "instances: expected a non-empty list of rows",
    ),
    ({"rows": IRIS_ROWS}, 'body: expected a JSON object {"instances": [...]}'),
    (
        {"instances": [{"float_input": [1, 2, 3, 4]}, {"petals": [1, 2, 3, 4]}]},
        "instances[1]: unknown input 'petals'; the model takes float_input",
    ),
    (
        {"instances": [{"float_input": [1, 2, 3, 4]}, [1, 2, 3, 4]]},
        "instances[1]: expected an object keyed by input name, like instances[0]",
    ),
]


def test_bad_instances_are_400(client: Client) -> None:
    answers = [
        post_json(client, "/models/iris/predict", document)
        for document, _ in BAD_INSTANCES
    ]
    assert [(answer.status_code, answer.json_body) for answer in answers] == [
        (400, {"error": error}) for _, error in BAD_INSTANCES
    ]
