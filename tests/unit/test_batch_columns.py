"""A model's columns in a batch file: the features rows feed, the prediction
fields appended to them (pure)."""

from __future__ import annotations

import pytest

from chalicelib.batch.tables.columns import features_of, open_widths, output_fields
from chalicelib.batch.tables.formats import CSV
from chalicelib.batch.tables.render import make_renderer
from chalicelib.errors import BatchFileError
from chalicelib.registry.manifest import Signature, TensorSpec
from tests.unit.batch_tables_support import (
    IRIS,
    LABELS,
    MIXED_FEATURES,
    manifest,
)


def test_features_take_the_per_row_shape() -> None:
    assert [(f.name, f.datatype, f.shape, f.size) for f in MIXED_FEATURES] == [
        ("x", "FP64", (2,), 2),
        ("n", "INT8", (), 1),
        ("flag", "BOOL", (1,), 1),
    ]


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            (1, 4),
            "input 'a' has shape [1, 4]: batch files need a dynamic first (row) "
            "dimension",
        ),
        (
            (),
            "input 'a' has shape []: batch files need a dynamic first (row) dimension",
        ),
        (
            (-1, -1),
            "input 'a' has shape [-1, -1]: batch files need a fixed number of "
            "values per row",
        ),
    ],
)
def test_inputs_rows_cannot_feed_are_refused(
    shape: tuple[int, ...], message: str
) -> None:
    signature = Signature(
        inputs=(TensorSpec("a", "FP32", shape),), outputs=IRIS.outputs
    )
    with pytest.raises(BatchFileError) as caught:
        features_of(manifest(signature))
    assert str(caught.value) == message


def test_classifier_fields_are_the_label_and_one_probability_per_class() -> None:
    fields = output_fields(manifest(IRIS, LABELS))
    renderer = make_renderer(fields, CSV)
    assert renderer.csv_columns == [
        "label",
        "probability_setosa",
        "probability_versicolor",
        "probability_virginica",
    ]
    unnamed = make_renderer(output_fields(manifest(IRIS)), CSV)
    assert unnamed.csv_columns[1:] == [
        "probability_0",
        "probability_1",
        "probability_2",
    ]


def test_other_models_get_one_column_per_output_value() -> None:
    signature = Signature(
        inputs=IRIS.inputs,
        outputs=(
            TensorSpec("variable", "FP32", (-1, 1)),
            TensorSpec("z", "FP32", (-1, 2)),
        ),
    )
    fields = output_fields(manifest(signature))
    assert [(f.key, f.columns, f.as_list) for f in fields] == [
        ("variable", ("variable",), False),
        ("z", ("z_0", "z_1"), True),
    ]


def test_open_output_widths_come_from_a_prediction() -> None:
    signature = Signature(
        inputs=IRIS.inputs, outputs=(TensorSpec("z", "FP32", (-1, -1)),)
    )
    assert open_widths(manifest(signature)) == ["z"]
    fields = output_fields(manifest(signature), {"z": 3})
    assert fields[0].columns == ("z_0", "z_1", "z_2")
