"""JSON Lines chunks: arrays and objects, by name or by position, and the reason
for every row rejected (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.batch.tables.chunks import (
    ARRAY_ROW,
    OBJECT_ROW,
    OBJECT_ROW_PREFIXED,
    Rejection,
)
from chalicelib.batch.tables.columns import Feature
from chalicelib.batch.tables.jsonlines import JsonLinesTable
from tests.unit.batch_tables_support import (
    IRIS_FEATURES,
    MIXED_FEATURES,
    NOT_A_NUMBER,
    NOT_FINITE,
)


def json_table(features: tuple[Feature, ...] = IRIS_FEATURES) -> JsonLinesTable:
    return JsonLinesTable(features, frozenset({"label", "probabilities"}))


def test_json_rows_are_arrays_or_objects_by_name_or_by_position() -> None:
    chunk = (
        b'[5.1, 3.5, 1.4, 0.2, "extra"]\n'
        b'{"id": 7, "float_input": [[6.0, 3.0], [4.8, 1.8]]}\n'
        b"\n"
        b'  {"a": 1, "b": 2, "c": 3, "d": 4, "e": "x"}  \n'
        b'{"id": 8, "label": "setosa", "float_input": [1, 2, 3, 4]}\n'
    )
    parsed = json_table().parse(chunk, 1, 1)
    assert parsed.rows == 4 and parsed.lines == 5 and not parsed.rejections
    assert parsed.heads == [
        b'[5.1, 3.5, 1.4, 0.2, "extra"',
        b'{"id": 7, "float_input": [[6.0, 3.0], [4.8, 1.8]]',
        b'{"a": 1, "b": 2, "c": 3, "d": 4, "e": "x"',
        b'{"id": 8, "label": "setosa", "float_input": [1, 2, 3, 4]',
    ]
    assert parsed.kinds is not None
    assert parsed.kinds.tolist() == [
        ARRAY_ROW,
        OBJECT_ROW,
        OBJECT_ROW,
        OBJECT_ROW_PREFIXED,
    ]
    np.testing.assert_array_equal(
        parsed.inputs["float_input"],
        np.array(
            [[5.1, 3.5, 1.4, 0.2], [6, 3, 4.8, 1.8], [1, 2, 3, 4], [1, 2, 3, 4]],
            np.float32,
        ),
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2, 3", "not valid JSON: Expecting ',' delimiter at column 9"),
        ('"text"', "a row must be a JSON array or object, not str"),
        ("null", "a row must be a JSON array or object, not null"),
        ("[1, 2, 3]", "the array has 3 values, the model takes 4"),
        (
            '{"a": 1}',
            "missing key 'float_input' (or give the model's 4 values by position; "
            "the object has 1)",
        ),
        (
            '{"float_input": [1, 2, 3]}',
            "key 'float_input' has 3 values, input expects 4",
        ),
        ('[1, "2", 3, 4]', f'value 1 is "2", {NOT_A_NUMBER}'),
        ("[1, true, 3, 4]", f"value 1 is true, {NOT_A_NUMBER}"),
        ("[1, [2], 3, 4]", "value 1 is [2], not a single value"),
        ("[1, 2, NaN, 4]", f"value 2 is NaN, {NOT_FINITE}"),
        (
            '{"float_input": [1, 2, null, 4]}',
            f"float_input[2] is null, {NOT_A_NUMBER}",
        ),
    ],
)
def test_bad_json_rows_are_rejected_with_their_reason(line: str, reason: str) -> None:
    chunk = f"[1, 2, 3, 4]\n{line}\n".encode()
    parsed = json_table().parse(chunk, 5, 9)
    assert parsed.rows == 2 and len(parsed.heads) == 1
    assert parsed.rejections == [Rejection(6, 10, line, reason)]


def test_json_objects_name_every_input_or_are_rejected() -> None:
    parsed = json_table(MIXED_FEATURES).parse(
        b'{"x": [1, 2], "n": 300, "flag": true}\n{"x": [1, 2], "flag": 1}\n', 1, 1
    )
    assert [item.reason for item in parsed.rejections] == [
        "key 'n' is 300, out of range for INT8 (-128 to 127)",
        "missing key 'n'",
    ]
