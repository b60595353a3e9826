"""The core's input checks and shadow agreement (pure, no I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.errors import InvalidInputError
from chalicelib.predictor import agreement, check_inputs
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec

IRIS = Signature(
    inputs=(TensorSpec("float_input", "FP32", (-1, 4)),),
    outputs=(
        TensorSpec("label", "INT64", (-1,)),
        TensorSpec("probabilities", "FP32", (-1, 3)),
    ),
)
TWO_INPUTS = Signature(
    inputs=(TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "INT64", (-1,))),
    outputs=(TensorSpec("y", "FP32", (-1, 1)),),
)


def manifest(signature: Signature) -> Manifest:
    return Manifest("m", 1, "0" * 64, 1, "2026-01-01T00:00:00.000Z", signature)


def test_matching_inputs_pass() -> None:
    check_inputs(IRIS, {"float_input": np.zeros((3, 4), np.float32)})


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "float_input: missing input"),
        (
            {"float_input": np.zeros((3, 4), np.float32), "x": np.zeros(1)},
            "x: unknown input; the model takes float_input",
        ),
        (
            {"float_input": np.zeros((3, 3), np.float32)},
            "float_input: has 3 features per row on axis 1, model expects 4",
        ),
        (
            {"float_input": np.zeros(4, np.float32)},
            "float_input: has 1 dimensions [4], model expects 2 [-1, 4]",
        ),
        (
            {"float_input": np.zeros((3, 4), np.float64)},
            "float_input: has dtype float64, model expects FP32",
        ),
    ],
)
def test_inputs_that_do_not_fit_are_refused(
    inputs: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(InvalidInputError) as raised:
        check_inputs(IRIS, inputs)
    assert raised.value.message == message


def test_inputs_with_different_row_counts_are_refused() -> None:
    with pytest.raises(InvalidInputError) as raised:
        check_inputs(
            TWO_INPUTS,
            {"a": np.zeros((2, 2), np.float32), "b": np.zeros(3, np.int64)},
        )
    assert raised.value.message == "inputs: inputs have different row counts [2, 3]"


def test_classifier_agreement_compares_predicted_classes() -> None:
    left = {"probabilities": np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1]], np.float32)}
    right = {"probabilities": np.array([[0.6, 0.4, 0], [0.5, 0.4, 0.1]], np.float32)}
    assert agreement(manifest(IRIS), left, manifest(IRIS), right) == 0.5


def test_regressor_agreement_is_within_one_percent() -> None:
    regressor = manifest(TWO_INPUTS)
    left = {"y": np.array([[100.0], [100.0]])}
    right = {"y": np.array([[100.5], [120.0]])}
    assert agreement(regressor, left, regressor, right) == 0.5
