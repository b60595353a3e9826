"""The bugs the two copies of the value rules caused, one test each (pure)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chalicelib.batch.tables.columns import features_of
from chalicelib.batch.tables.delimited import CsvTable
from chalicelib.batch.tables.jsonlines import JsonLinesTable
from chalicelib.errors import InvalidInputError
from chalicelib.protocols.common import parse_json
from chalicelib.protocols.instances import decode_instances
from chalicelib.protocols.v2 import read_infer_request
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec

OUT = (TensorSpec("y", "FP32", (-1, 1)),)


def manifest(datatype: str, width: int = 2, *, allow: bool = False) -> Manifest:
    return Manifest(
        "m",
        1,
        "0" * 64,
        1,
        "2026-01-01T00:00:00.000Z",
        Signature(inputs=(TensorSpec("x", datatype, (-1, width)),), outputs=OUT),
        tags={"turnout.non_finite": "allow"} if allow else {},
    )


def csv_reasons(model: Manifest, rows: str) -> list[str]:
    table = CsvTable.from_header(b"x_0,x_1", features_of(model))
    parsed = table.parse(rows.encode(), 1, 2)
    return [rejection.reason for rejection in parsed.rejections]


def jsonl_reasons(model: Manifest, rows: str) -> list[str]:
    table = JsonLinesTable(features_of(model))
    parsed = table.parse(rows.encode(), 1, 1)
    return [rejection.reason for rejection in parsed.rejections]


@pytest.mark.parametrize(("datatype", "value"), [("FP32", "1e39"), ("FP16", "70000")])
def test_batch_refuses_a_finite_value_that_overflows_its_datatype(
    datatype: str, value: str
) -> None:
    model = manifest(datatype)
    reason = f"column 'x_1' is '{value}', out of range for {datatype}"
    assert csv_reasons(model, f"1,{value}\n") == [reason]
    assert jsonl_reasons(model, f"[1, {value}]\n") == [
        f"value 1 is {json.dumps(json.loads(value))}, out of range for {datatype}"
    ]


def test_a_huge_integer_in_json_lines_is_one_rejected_row() -> None:
    huge = "1" + "0" * 400
    assert jsonl_reasons(manifest("FP32"), f"[1, {huge}]\n[1, 2]\n") == [
        f"value 1 is {huge[:37]}..., out of range for FP32"
    ]
    assert csv_reasons(manifest("FP64", allow=True), f"1,{huge}\n") == [
        f"column 'x_1' is '{huge[:37]}...', out of range for FP64"
    ]


def test_a_huge_integer_cell_for_an_integer_input_is_one_rejected_row() -> None:
    huge = "9" * 5000
    assert csv_reasons(manifest("INT64"), f"1,{huge}\n") == [
        f"column 'x_1' is '{huge[:37]}...', out of range for INT64 "
        "(-9223372036854775808 to 9223372036854775807)"
    ]


def test_batch_honours_the_non_finite_tag() -> None:
    model = manifest("FP32", allow=True)
    table = CsvTable.from_header(b"x_0,x_1", features_of(model))
    parsed = table.parse(b"nan,1\n-inf,2\n", 1, 2)
    assert not parsed.rejections
    np.testing.assert_array_equal(
        parsed.inputs["x"], np.array([[np.nan, 1], [-np.inf, 2]], np.float32)
    )
    lines = JsonLinesTable(features_of(model)).parse(b"[NaN, 1]\n", 1, 1)
    assert not lines.rejections and np.isnan(lines.inputs["x"][0, 0])


def test_json_lines_bool_inputs_refuse_numbers_as_v2_does() -> None:
    assert jsonl_reasons(manifest("BOOL"), "[true, 1]\n[0, false]\n[1.0, true]\n") == [
        "value 1 is 1, not a boolean, model expects BOOL",
        "value 0 is 0, not a boolean, model expects BOOL",
        "value 0 is 1.0, not a boolean, model expects BOOL",
    ]


@pytest.mark.parametrize("header", ["²", "١٢", "1" * 5000, "+3", "3_0"])
def test_a_binary_header_that_is_not_ascii_digits_is_a_400(header: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        read_infer_request(b'{"inputs": []}' + b"\0" * 8, header)
    assert caught.value.field == "Inference-Header-Content-Length"


def test_an_integer_literal_beyond_pythons_digit_limit_is_a_400() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_json(b'{"instances": [[' + b"7" * 5000 + b"]]}")
    assert str(caught.value) == (
        "body: a number has more than 4300 digits, more than any datatype holds"
    )


def test_instances_nested_a_thousand_deep_are_a_400() -> None:
    document = json.loads("[" * 1000 + "1" + "]" * 1000)
    with pytest.raises(InvalidInputError) as caught:
        decode_instances({"instances": [document]}, manifest("FP32", 4), max_rows=10)
    assert str(caught.value) == (
        "instances[0]: nested more than 64 lists deep, model expects rows of shape [4]"
    )


def test_json_lines_nested_too_deep_is_one_rejected_row() -> None:
    model = manifest("FP32")
    deep = "[" * 100_000 + "]" * 100_000
    assert jsonl_reasons(model, f"{deep}\n[1, 2]\n") == [
        "not valid JSON: nested too deeply"
    ]
    value = "[" * 995 + "1" + "]" * 995
    assert jsonl_reasons(model, f'{{"x": {value}}}\n') == [
        "key 'x' is nested more than 64 lists deep, input expects 2 values"
    ]


def test_an_object_row_without_its_inputs_key_names_it() -> None:
    assert jsonl_reasons(manifest("FP32", 4), '{"a": 1}\n') == [
        "missing key 'x' (or give the model's 4 values by position; the object has 1)"
    ]
