"""The instances protocol to and from numpy: rows of one or several inputs,
every refusal, one prediction per row. No I/O."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from chalicelib.errors import TooManyRowsError
from chalicelib.protocols.instances import decode_instances, encode_predictions
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec
from tests.unit.protocol_support import IRIS, LABELS, manifest, one_input, refusal

# -- instances -------------------------------------------------------------------------


def instances(rows: Any, target: Manifest | None = None, max_rows: int = 100) -> Any:
    return decode_instances(
        {"instances": rows}, target or manifest(), max_rows=max_rows
    )


TWO_INPUTS = manifest(
    Signature(
        inputs=(TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "INT64", (-1,))),
        outputs=(TensorSpec("y", "FP32", (-1, 1)),),
    ),
    labels=None,
)


def test_rows_as_lists_feed_a_single_input() -> None:
    (array,) = instances([[1, 2, 3, 4], [5, 6, 7, 8.5]]).values()
    assert array.dtype == np.float32
    assert array.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8.5]]


def test_rows_as_objects_feed_several_inputs() -> None:
    arrays = instances([{"a": [1, 2], "b": 3}, {"b": 4, "a": [5, 6]}], TWO_INPUTS)
    assert arrays["a"].tolist() == [[1.0, 2.0], [5.0, 6.0]]
    assert arrays["b"].dtype == np.int64 and arrays["b"].tolist() == [3, 4]


@pytest.mark.parametrize(
    ("document", "target", "message"),
    [
        ([], None, 'body: expected a JSON object {"instances": [...]}'),
        ({"rows": []}, None, 'body: expected a JSON object {"instances": [...]}'),
        ({"instances": []}, None, "instances: expected a non-empty list of rows"),
        ({"instances": "1,2"}, None, "instances: expected a non-empty list of rows"),
        (
            {"instances": [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3]]},
            None,
            "instances[2]: 3 features, model expects 4",
        ),
        (
            {"instances": [[1, 2, 3], [1, 2, 3]]},
            None,
            "instances[0]: 3 features, model expects 4",
        ),
        (
            {"instances": [[1, 2, 3, 4], 5]},
            None,
            "instances[1]: a single value, model expects a row of 4 features",
        ),
        (
            {"instances": [[1, 2, 3, 4], [[1, 2], [3, 4]]]},
            None,
            "instances[1]: shape [2, 2], model expects [4]",
        ),
        (
            {"instances": [[1, 2, 3, 4], [1, [2], 3, 4]]},
            None,
            "instances[1]: nested lists of different lengths",
        ),
        (
            {"instances": [[1, 2, 3, 4], [1, 2, "3", 4]]},
            None,
            'instances[1]: "3" is not a number, model expects FP32',
        ),
        (
            {"instances": [[1, 2, 3, 4], [1, 2, 3, float("nan")]]},
            None,
            "instances[1]: NaN is not a finite number; this model does not take NaN "
            "or Infinity",
        ),
        (
            {"instances": [[1, 2], [3, 4]]},
            TWO_INPUTS,
            "instances[0]: a list, but the model takes several inputs (a, b): "
            "send each row as an object keyed by input name",
        ),
        (
            {"instances": [{"a": [1, 2], "b": 1}, {"a": [1, 2]}]},
            TWO_INPUTS,
            "instances[1]: missing input 'b'",
        ),
        (
            {"instances": [{"a": [1, 2], "b": 1, "c": 2}]},
            TWO_INPUTS,
            "instances[0]: unknown input 'c'; the model takes a, b",
        ),
        (
            {"instances": [{"a": [1, 2], "b": 1}, [1, 2]]},
            TWO_INPUTS,
            "instances[1]: expected an object keyed by input name, like instances[0]",
        ),
        (
            {"instances": [{"a": [1, 2], "b": 1}, {"a": [1, 2, 3], "b": 2}]},
            TWO_INPUTS,
            "instances[1].a: 3 features, model expects 2",
        ),
        (
            {"instances": [{"a": [1, 2], "b": 1}, {"a": [1, 2], "b": 2.5}]},
            TWO_INPUTS,
            "instances[1].b: 2.5 is not an integer, model expects INT64",
        ),
        (
            {"instances": [{"a": [1, 2], "b": 1}, {"a": [1, 2], "b": [2]}]},
            TWO_INPUTS,
            "instances[1].b: shape [1], model expects a single value per row",
        ),
    ],
)
def test_instance_refusals(
    document: Any, target: Manifest | None, message: str
) -> None:
    assert (
        refusal(decode_instances, document, target or manifest(), max_rows=100)
        == message
    )


def test_a_dynamic_row_length_must_match_the_first_row() -> None:
    target = one_input("FP32", (-1, -1))
    assert instances([[1, 2, 3], [4, 5, 6]], target)["x"].shape == (2, 3)
    assert refusal(instances, [[1, 2, 3], [4, 5]], target) == (
        "instances[1]: shape [2], row 0 has [3]"
    )


def test_more_instances_than_the_limit_are_refused() -> None:
    with pytest.raises(TooManyRowsError) as caught:
        instances([[1, 2, 3, 4]] * 3, max_rows=2)
    assert caught.value.message.startswith("instances: 3 rows, over the limit of 2 ")


CLASSIFIER_OUTPUTS: dict[str, np.ndarray] = {
    "label": np.array([2, 0], np.int64),
    "probabilities": np.array([[0.1, 0.2, 0.7], [0.9, 0.1, 0.0]], np.float32),
}


def test_a_classifier_prediction_names_its_class() -> None:
    predictions = encode_predictions(manifest(), CLASSIFIER_OUTPUTS)
    assert [p["label"] for p in predictions] == ["virginica", "setosa"]
    assert list(predictions[0]["probabilities"]) == list(LABELS)
    np.testing.assert_allclose(
        list(predictions[0]["probabilities"].values()), [0.1, 0.2, 0.7]
    )


def test_without_labels_a_classifier_gives_its_label_and_a_list() -> None:
    predictions = encode_predictions(manifest(labels=None), CLASSIFIER_OUTPUTS)
    assert [p["label"] for p in predictions] == [2, 0]
    np.testing.assert_allclose(predictions[1]["probabilities"], [0.9, 0.1, 0.0])


def test_a_classifier_without_a_label_output_takes_the_likeliest_class() -> None:
    signature = Signature(
        inputs=IRIS.inputs, outputs=(TensorSpec("probabilities", "FP32", (-1, 3)),)
    )
    outputs = {"probabilities": CLASSIFIER_OUTPUTS["probabilities"]}
    predictions = encode_predictions(manifest(signature), outputs)
    assert [p["label"] for p in predictions] == ["virginica", "setosa"]


def test_a_regressor_gives_one_number_per_row() -> None:
    target = one_input("FP32")
    assert encode_predictions(target, {"y": np.array([[1.5], [2.5]], np.float32)}) == [
        1.5,
        2.5,
    ]
    assert encode_predictions(
        target, {"y": np.array([[1, 2], [3, 4]], np.float32)}
    ) == [
        [1.0, 2.0],
        [3.0, 4.0],
    ]


def test_other_models_give_an_object_of_outputs_per_row() -> None:
    signature = Signature(
        inputs=IRIS.inputs,
        outputs=(TensorSpec("low", "FP32", (-1,)), TensorSpec("high", "FP32", (-1,))),
    )
    outputs = {
        "low": np.array([1, 2], np.float32),
        "high": np.array([3, 4], np.float32),
    }
    assert encode_predictions(manifest(signature, labels=None), outputs) == [
        {"low": 1.0, "high": 3.0},
        {"low": 2.0, "high": 4.0},
    ]
