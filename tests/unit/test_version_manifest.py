"""Manifests, signatures and the ONNX header reader (pure)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chalicelib.errors import InvalidModelError
from chalicelib.model_header import ModelHeader, read_model_header
from chalicelib.registry.manifest import (
    ClassifierOutputs,
    Manifest,
    Signature,
    TensorSpec,
    classifier_outputs,
)
from tests.demo_support import model_bytes

# The demo models' signatures, as the registry reads them (see tests/functional).
IRIS = Signature(
    inputs=(TensorSpec("float_input", "FP32", (-1, 4)),),
    outputs=(
        TensorSpec("label", "INT64", (-1,)),
        TensorSpec("probabilities", "FP32", (-1, 3)),
    ),
)
DIABETES = Signature(
    inputs=(TensorSpec("float_input", "FP32", (-1, 10)),),
    outputs=(TensorSpec("variable", "FP32", (-1, 1)),),
)

MANIFEST = Manifest(
    name="iris",
    version=2,
    sha256="ab" * 32,
    size=37845,
    created_at="2026-01-02T03:04:05.678Z",
    signature=IRIS,
    description="boosting",
    tags={"team": "ml", "stage": "dev"},
    labels=("setosa", "versicolor", "virginica"),
    opset={"ai.onnx": 17, "ai.onnx.ml": 1},
    producer={"name": "skl2onnx", "version": "1.20.0"},
    ir_version=8,
)


def test_a_manifest_is_written_as_flat_json() -> None:
    assert MANIFEST.to_dict() == {
        "name": "iris",
        "version": 2,
        "sha256": "ab" * 32,
        "size": 37845,
        "created_at": "2026-01-02T03:04:05.678Z",
        "description": "boosting",
        "tags": {"team": "ml", "stage": "dev"},
        "labels": ["setosa", "versicolor", "virginica"],
        "opset": {"ai.onnx": 17, "ai.onnx.ml": 1},
        "producer": {"name": "skl2onnx", "version": "1.20.0"},
        "ir_version": 8,
        "format": 1,
        "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }


def test_a_manifest_round_trips_through_json() -> None:
    assert Manifest.from_dict(json.loads(json.dumps(MANIFEST.to_dict()))) == MANIFEST


def test_a_manifest_without_labels_round_trips() -> None:
    manifest = Manifest("diabetes", 1, "cd" * 32, 26939, "t", DIABETES)
    data = json.loads(json.dumps(manifest.to_dict()))
    assert data["labels"] is None
    assert data["tags"] == {}
    assert Manifest.from_dict(data) == manifest


def test_signature_lookup_by_name() -> None:
    assert IRIS.input("float_input") == TensorSpec("float_input", "FP32", (-1, 4))
    assert IRIS.output("label") == TensorSpec("label", "INT64", (-1,))
    assert IRIS.output("nope") is None


def test_the_iris_classifier_has_labels_and_probabilities() -> None:
    assert classifier_outputs(IRIS) == ClassifierOutputs(
        label=TensorSpec("label", "INT64", (-1,)),
        probabilities=TensorSpec("probabilities", "FP32", (-1, 3)),
    )


def test_the_diabetes_regressor_is_not_a_classifier() -> None:
    assert classifier_outputs(DIABETES) is None


def test_an_unnamed_float_output_beside_a_label_is_the_probabilities() -> None:
    signature = Signature(
        inputs=IRIS.inputs,
        outputs=(
            TensorSpec("output_label", "INT64", (-1,)),
            TensorSpec("scores", "FP32", (-1, 3)),
        ),
    )
    assert classifier_outputs(signature) == ClassifierOutputs(
        label=TensorSpec("output_label", "INT64", (-1,)),
        probabilities=TensorSpec("scores", "FP32", (-1, 3)),
    )


def test_probabilities_alone_make_a_classifier_without_a_label() -> None:
    signature = Signature(
        inputs=IRIS.inputs, outputs=(TensorSpec("probs", "FP64", (-1, 2)),)
    )
    assert classifier_outputs(signature) == ClassifierOutputs(
        label=None, probabilities=TensorSpec("probs", "FP64", (-1, 2))
    )


DEMO_HEADER = ModelHeader(
    ir_version=8, producer_version="1.20.0", opset={"ai.onnx": 17, "ai.onnx.ml": 1}
)


@pytest.mark.parametrize("filename", ["iris-v1.onnx", "iris-v2.onnx", "diabetes.onnx"])
def test_the_header_of_each_demo_model(filename: str) -> None:
    assert read_model_header(model_bytes(filename)) == DEMO_HEADER


def test_an_empty_file_has_an_empty_header() -> None:
    assert read_model_header(b"") == ModelHeader(0, "", {})


def test_a_header_that_is_not_protobuf_is_refused() -> None:
    with pytest.raises(InvalidModelError) as caught:
        read_model_header(b"\x0f")
    assert str(caught.value) == (
        "not a loadable ONNX model: cannot read the ONNX header: "
        "unsupported protobuf wire type 7"
    )


def test_a_truncated_header_is_refused() -> None:
    with pytest.raises(InvalidModelError) as caught:
        read_model_header(b"\x08\x80")  # ir_version's varint never ends
    assert str(caught.value).startswith(
        "not a loadable ONNX model: cannot read the ONNX header: "
    )


def test_provenance_and_the_baseline_checksum_round_trip_and_are_optional() -> None:
    published = replace(
        MANIFEST,
        provenance={"framework": "scikit-learn", "accepted_tolerance": None},
        baseline_sha256="ef" * 32,
    )
    data = json.loads(json.dumps(published.to_dict()))
    assert data["provenance"] == {
        "framework": "scikit-learn",
        "accepted_tolerance": None,
    }
    assert data["baseline_sha256"] == "ef" * 32
    assert Manifest.from_dict(data) == published
    assert "provenance" not in MANIFEST.to_dict()
    assert "baseline_sha256" not in MANIFEST.to_dict()
