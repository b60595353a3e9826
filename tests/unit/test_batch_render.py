"""Output rows: the prediction fields appended to CSV and JSON rows (pure)."""

from __future__ import annotations

import json
import math

import numpy as np

from chalicelib.batch.tables.chunks import ARRAY_ROW, OBJECT_ROW, OBJECT_ROW_PREFIXED
from chalicelib.batch.tables.columns import output_fields
from chalicelib.batch.tables.formats import CSV, JSONL
from chalicelib.batch.tables.render import assemble, make_renderer
from chalicelib.registry.manifest import Signature, TensorSpec
from tests.unit.batch_tables_support import IRIS, LABELS, manifest

OUTPUTS: dict[str, np.ndarray] = {
    "label": np.array([0, 2], np.int64),
    "probabilities": np.array([[0.9, 0.1, 0.0], [0.0, 0.25, 0.75]], np.float32),
}


def test_csv_rows_get_the_prediction_columns_appended() -> None:
    renderer = make_renderer(output_fields(manifest(IRIS, LABELS)), CSV, ["id", "x"])
    suffixes = renderer.suffixes(OUTPUTS, None)
    assert assemble([b"1,a", b"2,b"], suffixes) == (
        b"1,a,setosa,0.900000,0.100000,0.000000\n"
        b"2,b,virginica,0.000000,0.250000,0.750000\n"
    )
    assert renderer.csv_header(b"id,x") == (
        b"id,x,label,probability_setosa,probability_versicolor,probability_virginica\n"
    )


def test_csv_prediction_columns_that_clash_with_the_input_get_a_prefix() -> None:
    renderer = make_renderer(
        output_fields(manifest(IRIS, LABELS)), CSV, ["id", " label"]
    )
    assert renderer.csv_columns[:2] == [
        "predicted_label",
        "predicted_probability_setosa",
    ]


def test_json_rows_get_fields_in_their_own_shape() -> None:
    fields = output_fields(manifest(IRIS, LABELS))
    renderer = make_renderer(fields, JSONL)
    kinds = np.array([ARRAY_ROW, OBJECT_ROW_PREFIXED], np.int8)
    rows = assemble([b"[1, 2", b'{"label": "x"'], renderer.suffixes(OUTPUTS, kinds))
    first, second = rows.decode().splitlines()
    assert json.loads(first) == [1, 2, "setosa", 0.9, 0.1, 0.0]
    assert json.loads(second) == {
        "label": "x",
        "predicted_label": "virginica",
        "predicted_probabilities": {
            "setosa": 0.0,
            "versicolor": 0.25,
            "virginica": 0.75,
        },
    }
    plain = assemble(
        [b'{"id": 1'],
        renderer.suffixes(
            {k: v[:1] for k, v in OUTPUTS.items()},
            np.array([OBJECT_ROW], np.int8),
        ),
    )
    assert json.loads(plain) == {
        "id": 1,
        "label": "setosa",
        "probabilities": {"setosa": 0.9, "versicolor": 0.1, "virginica": 0.0},
    }
    unlabelled = make_renderer(output_fields(manifest(IRIS)), JSONL)
    bare = assemble(
        [b'{"id": 1'],
        unlabelled.suffixes(
            {k: v[:1] for k, v in OUTPUTS.items()},
            np.array([OBJECT_ROW], np.int8),
        ),
    )
    assert json.loads(bare)["probabilities"] == [0.9, 0.1, 0.0]


def test_regression_values_are_scalars_in_json_and_columns_in_csv() -> None:
    signature = Signature(
        inputs=IRIS.inputs, outputs=(TensorSpec("variable", "FP32", (-1, 1)),)
    )
    fields = output_fields(manifest(signature))
    outputs: dict[str, np.ndarray] = {
        "variable": np.array([[151.25], [-0.5]], np.float32)
    }
    csv_rows = assemble(
        [b"a", b"b"], make_renderer(fields, CSV).suffixes(outputs, None)
    )
    assert csv_rows == b"a,151.250000\nb,-0.500000\n"
    kinds = np.array([OBJECT_ROW, OBJECT_ROW], np.int8)
    json_rows = assemble(
        [b'{"i": 1', b'{"i": 2'],
        make_renderer(fields, JSONL).suffixes(outputs, kinds),
    )
    assert [json.loads(line)["variable"] for line in json_rows.splitlines()] == [
        151.25,
        -0.5,
    ]
    assert not math.isnan(json.loads(json_rows.splitlines()[0])["variable"])
