"""``turnout.publish``: models trained on scikit-learn's bundled data sets are
converted, checked against the original, registered in the moto registry and
then answer through REST and batch with the original's labels on every row."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from chalice.test import Client

import turnout
from chalicelib import layout
from chalicelib.aliases.store import AliasStore
from chalicelib.errors import BaselineExistsError
from chalicelib.registry.manifest import TensorSpec
from chalicelib.registry.versions import Registry
from tests.demo_support import MODEL_BUCKET, ROOT, model_bytes
from tests.functional.batch_support import Batch
from tests.functional.publish_support import (
    cancer_lightgbm,
    diabetes,
    iris_boosting,
    wine,
    wine_forest,
    wine_hist_boosting,
    wine_logistic,
)
from tests.functional.rest_support import post_json
from turnout.publish.api import publish
from turnout.publish.convert import ConversionError
from turnout.publish.parity import ParityError


def rest_labels(client: Client, name: str, instances: list[Any]) -> list[str]:
    response = post_json(client, f"/models/{name}/predict", {"instances": instances})
    assert response.status_code == 200, response.body
    return [str(row["label"]) for row in json.loads(response.body)["predictions"]]


def batch_labels(
    batch: Batch, name: str, version: int, frame: pd.DataFrame
) -> list[str]:
    key = f"incoming/{name}@{version}/rows.csv"
    manifest = batch.run(key, frame.to_csv(index=False))
    assert manifest["status"] == "succeeded", manifest
    rows = list(csv.DictReader(io.StringIO(batch.output(key))))
    return [row["label"] for row in rows]


def as_frame(array: np.ndarray) -> pd.DataFrame:
    """An array as the batch file a user writes for a model with one input."""
    return pd.DataFrame(
        array, columns=[f"float_input_{index}" for index in range(array.shape[1])]
    )


def test_a_wine_pipeline_with_a_categorical_column_answers_like_the_original(
    registry: Registry, client: Client, batch_app: Batch
) -> None:
    frame, labels = wine()
    model = wine_logistic()
    result = turnout.publish(
        model,
        name="wine",
        sample=frame,
        labels=labels,
        registry=registry,
        alias="prod",
        weight=100,
    )
    assert result.version == 1 and result.parity is not None and result.parity.passed
    expected = [str(label) for label in model.predict(frame)]
    # One input per column, each [rows, 1]: a keyed instance gives each a row of one.
    instances = [
        {column: [value] for column, value in row.items()}
        for row in json.loads(frame.to_json(orient="records"))
    ]
    assert rest_labels(client, "wine", instances) == expected
    assert batch_labels(batch_app, "wine", 1, frame) == expected
    manifest = registry.get_manifest("wine", 1)
    assert manifest.labels == ("class_0", "class_1", "class_2")
    assert [spec.name for spec in manifest.inputs] == list(frame.columns)
    assert manifest.signature.input("band") == TensorSpec("band", "BYTES", (-1, 1))
    assert manifest.provenance["framework"] == "scikit-learn"
    assert manifest.provenance["libraries"]["skl2onnx"] == "1.20.0"
    assert manifest.provenance["input_precision"] == "float32"
    assert manifest.provenance["parity"]["passed"] is True
    assert manifest.provenance["accepted_tolerance"] is None


def test_a_regressor_a_gradient_boosting_and_a_lightgbm_model_answer_alike(
    registry: Registry, client: Client, batch_app: Batch
) -> None:
    features, target, regressor = diabetes()
    published = publish(
        regressor,
        name="sugar",
        sample=features,
        labels=target,
        registry=registry,
        alias="prod",
        weight=100,
    )
    response = post_json(
        client, "/models/sugar/predict", {"instances": features.tolist()}
    )
    served = np.array(json.loads(response.body)["predictions"])
    np.testing.assert_allclose(
        served, regressor.predict(features), rtol=1e-4, atol=1e-3
    )
    assert published.parity is not None and published.parity.kind == "regressor"

    for name, (data, target, model) in {
        "flowers": iris_boosting(),
        "cancer": cancer_lightgbm(),
    }.items():
        result = publish(
            model,
            name=name,
            sample=data,
            labels=target,
            registry=registry,
            alias="prod",
            weight=100,
        )
        assert result.version == 1
        expected = [str(label) for label in model.predict(data)]
        assert rest_labels(client, name, data.tolist()) == expected
        assert batch_labels(batch_app, name, 1, as_frame(data)) == expected
    manifest = registry.get_manifest("cancer", 1)
    assert manifest.provenance["framework"] == "lightgbm"
    assert manifest.labels == ("0", "1")


def test_a_forest_whose_probabilities_drift_in_float32_is_refused_with_its_rows(
    registry: Registry,
) -> None:
    frame, _ = wine()
    with pytest.raises(ParityError) as raised:
        publish(
            wine_forest(),
            name="wine",
            sample=frame,
            registry=registry,
            precision="float32",
        )
    report = raised.value.report
    assert not report.passed and report.label_mismatch_count == 0
    probabilities = report.outputs[1]
    assert probabilities.output == "probabilities" and not probabilities.passed
    assert probabilities.largest_difference == pytest.approx(0.12, abs=1e-6)
    assert probabilities.row == 39
    assert [row.row for row in report.worst_rows][:1] == [39]
    assert "row 39, probabilities: [0.88, 0.06, 0.06] -> [1, 0, 0]" in str(raised.value)
    assert registry.list_versions("wine") == []


def test_an_accepted_tolerance_publishes_the_forest_and_is_recorded(
    registry: Registry,
) -> None:
    frame, _ = wine()
    result = publish(
        wine_forest(),
        name="wine",
        sample=frame,
        registry=registry,
        tolerance=0.15,
        precision="float32",
    )
    assert result.manifest is not None
    assert result.manifest.provenance["accepted_tolerance"] == 0.15
    assert result.manifest.provenance["parity"]["outputs"][1]["allowed"] == "0.15"


def test_a_forest_is_converted_for_float64_when_float32_drifts_and_serves_alike(
    registry: Registry, client: Client, batch_app: Batch
) -> None:
    frame, labels = wine()
    model = wine_forest()
    result = publish(
        model,
        name="wine",
        sample=frame,
        labels=labels,
        registry=registry,
        alias="prod",
        weight=100,
    )
    assert result.parity is not None and result.parity.passed
    assert result.parity.outputs[1].largest_difference < 1e-7
    assert result.parity.notes == (
        "inputs fed as float64",
        "converted for float64 inputs: with float32 inputs probabilities differed "
        "by up to 0.12 (row 39)",
    )
    manifest = registry.get_manifest("wine", 1)
    assert manifest.provenance["input_precision"] == "float64"
    assert manifest.signature.input("alcohol") == TensorSpec("alcohol", "FP64", (-1, 1))
    expected = [str(label) for label in model.predict(frame)]
    instances = [
        {column: [value] for column, value in row.items()}
        for row in json.loads(frame.to_json(orient="records"))
    ]
    response = post_json(client, "/models/wine/predict", {"instances": instances})
    served = json.loads(response.body)["predictions"]
    assert [row["label"] for row in served] == expected
    np.testing.assert_allclose(
        [list(row["probabilities"].values()) for row in served],
        model.predict_proba(frame),
        atol=1e-6,
    )
    assert batch_labels(batch_app, "wine", 1, frame) == expected


def test_a_step_the_converter_cannot_take_is_named_with_what_to_do(
    registry: Registry,
) -> None:
    frame, _ = wine()
    with pytest.raises(ConversionError) as raised:
        publish(wine_hist_boosting(), name="wine", sample=frame, registry=registry)
    message = str(raised.value)
    assert message.startswith(
        "could not convert the model to ONNX: skl2onnx 1.20.0 failed on step "
        "'classifier' (HistGradientBoostingClassifier) with ValueError: Unable to "
        "create node 'TreeEnsembleClassifier'"
    )
    assert "publish the ONNX file with reference=" in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_an_onnx_file_whose_reference_differs_is_refused_naming_the_rows(
    registry: Registry,
) -> None:
    features, _, model = iris_boosting()

    def swapped(rows: np.ndarray) -> np.ndarray:
        probabilities: np.ndarray = model.predict_proba(rows)
        return probabilities[:, [0, 2, 1]]  # versicolor and virginica swapped

    with pytest.raises(ParityError) as raised:
        publish(
            model_bytes("iris-v2.onnx"),
            name="iris",
            sample=features.astype(np.float32),
            reference=swapped,
            registry=registry,
        )
    report = raised.value.report
    assert report.label_mismatch_count == 100
    first = report.label_mismatches[0]
    assert (first.row, first.original, first.onnx) == (50, 2, 1)
    assert "row 50: 2 -> 1" in str(raised.value)


def test_an_onnx_file_with_its_reference_is_published_with_its_labels(
    registry: Registry,
) -> None:
    features, _, model = iris_boosting()
    result = publish(
        model_bytes("iris-v2.onnx"),
        name="iris",
        sample=features,
        reference=model.predict_proba,
        registry=registry,
    )
    assert result.manifest is not None
    assert result.manifest.labels == ("setosa", "versicolor", "virginica")
    assert result.manifest.provenance["framework"] == "onnx"


def test_a_dry_run_checks_everything_and_registers_nothing(
    registry: Registry, s3: Any
) -> None:
    frame, labels = wine()
    before = s3.list_objects_v2(Bucket=MODEL_BUCKET).get("KeyCount")
    result = publish(
        wine_logistic(),
        name="wine",
        sample=frame,
        labels=labels,
        registry=registry,
        alias="staging",
        weight=10,
        dry_run=True,
    )
    assert result.version is None and result.manifest is None
    assert result.parity is not None and result.parity.passed
    assert result.baseline.rows == len(frame)
    assert s3.list_objects_v2(Bucket=MODEL_BUCKET).get("KeyCount") == before


def test_the_baseline_is_stored_with_the_version_and_set_only_once(
    registry: Registry, s3: Any
) -> None:
    frame, labels = wine()
    result = publish(
        wine_logistic(), name="wine", sample=frame, labels=labels, registry=registry
    )
    assert registry.get_baseline("wine", 1) == result.baseline
    assert result.baseline.feature("band").kind == "categorical"
    assert result.baseline.label is not None
    assert s3.head_object(Bucket=MODEL_BUCKET, Key=layout.baseline_key("wine", 1))
    with pytest.raises(BaselineExistsError):
        registry.set_baseline("wine", 1, result.baseline)

    plain = registry.register("plain", model_bytes("iris-v1.onnx"))
    assert registry.get_baseline("plain", plain.version) is None
    registry.set_baseline("plain", plain.version, result.baseline)
    assert registry.get_baseline("plain", plain.version) == result.baseline
    with pytest.raises(BaselineExistsError) as raised:
        registry.set_baseline("plain", plain.version, result.baseline)
    assert str(raised.value) == (
        "version 1 of 'plain' already has a baseline; a baseline is set once and "
        "never replaced"
    )


def test_a_shadow_and_a_weight_are_given_to_the_new_version(
    registry: Registry, aliases: AliasStore
) -> None:
    features, _, model = iris_boosting()
    publish(
        model,
        name="flowers",
        sample=features,
        registry=registry,
        alias="prod",
        weight=100,
    )
    publish(
        model,
        name="flowers",
        sample=features,
        registry=registry,
        alias="prod",
        weight=10,
    )
    publish(model, name="flowers", sample=features, registry=registry, shadow="prod:20")
    document = aliases.get("flowers", "prod")
    assert document.weights == {1: 100, 2: 10}
    assert document.shadow is not None
    assert (document.shadow.version, document.shadow.percent) == (3, 20)


def test_import_turnout_loads_no_converter_and_publish_stays_callable() -> None:
    program = (
        "import sys, turnout\n"
        "assert not {'turnout.publish', 'sklearn', 'skl2onnx'} & set(sys.modules)\n"
        "import turnout.publish.api\n"
        "print(callable(turnout.publish), turnout.publish.api.publish.__name__)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert completed.stdout == "True publish\n"


def test_a_lightgbm_model_trained_on_a_dataframe_takes_one_input_of_every_column(
    registry: Registry,
) -> None:
    import lightgbm
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    model = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1, random_state=0)
    model.fit(data.data, data.target)
    result = publish(model, name="cancer", sample=data.data, registry=registry)
    assert result.parity is not None and result.parity.passed
    assert result.manifest is not None
    assert result.manifest.inputs == (TensorSpec("float_input", "FP32", (-1, 30)),)
    assert result.baseline.features[0].name == "float_input_0"
