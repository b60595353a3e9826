"""The Open Inference Protocol (V2) to and from numpy: every datatype, every
refusal, the binary extension, the answer; and reading JSON bodies. No I/O."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from chalicelib.datatypes import V2_TO_NUMPY
from chalicelib.errors import TooManyRowsError
from chalicelib.protocols.common import json_values, parse_json
from chalicelib.protocols.v2 import (
    decode_inputs,
    encode_infer_response,
    read_infer_request,
)
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec
from tests.unit.protocol_support import (
    manifest,
    one_input,
    refusal,
)


def v2(
    document: Any,
    target: Manifest | None = None,
    *,
    max_rows: int = 100,
    header: str | None = None,
    body: bytes | None = None,
) -> dict[str, np.ndarray]:
    request = read_infer_request(
        json.dumps(document).encode() if body is None else body, header
    )
    return decode_inputs(request, target or manifest(), max_rows=max_rows)


def tensor(name: str = "x", shape: list[int] | None = None, **fields: Any) -> Any:
    return {"inputs": [{"name": name, "shape": shape or [1, 2], **fields}]}


# -- parse_json ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body: empty; send a JSON object"),
        (b"  \n", "body: empty; send a JSON object"),
        (
            b"{",
            "body: malformed JSON: Expecting property name enclosed in double "
            "quotes at line 1 column 2",
        ),
        (
            b'{"a" 1}',
            "body: malformed JSON: Expecting ':' delimiter at line 1 column 6",
        ),
        (b'{"a": 1} x', "body: malformed JSON: Extra data at line 1 column 10"),
        (b'["\xc3\x28"]', "body: not UTF-8 text"),
        (b"[" * 100_000, "body: malformed JSON: nested too deeply"),
    ],
)
def test_malformed_json_is_named(body: bytes, message: str) -> None:
    assert refusal(parse_json, body) == message


def test_the_hint_is_given_only_for_trailing_or_binary_data() -> None:
    assert refusal(parse_json, b'{"a": 1} x', " (hint)").endswith("column 10 (hint)")
    assert refusal(parse_json, b'["\xff"]', " (hint)") == "body: not UTF-8 text (hint)"
    assert not refusal(parse_json, b"{", " (hint)").endswith("(hint)")


def test_nan_and_infinity_tokens_are_read() -> None:
    values = parse_json(b"[NaN, Infinity, -Infinity]")
    assert np.isnan(values[0]) and values[1:] == [float("inf"), float("-inf")]


# -- V2 datatypes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("BOOL", [True, False], [True, False]),
        ("INT8", [-128, 127], [-128, 127]),
        ("INT16", [-32768, 32767], [-32768, 32767]),
        ("INT32", [-(2**31), 2**31 - 1], [-(2**31), 2**31 - 1]),
        ("INT64", [-(2**63), 2**63 - 1], [-(2**63), 2**63 - 1]),
        ("UINT8", [0, 255], [0, 255]),
        ("UINT16", [0, 65535], [0, 65535]),
        ("UINT32", [0, 2**32 - 1], [0, 2**32 - 1]),
        ("UINT64", [0, 2**64 - 1], [0, 2**64 - 1]),
        ("INT64", [2.0, -3.0], [2, -3]),
        ("FP16", [0.5, -65504], [0.5, -65504.0]),
        ("FP32", [1, 2.5], [1.0, 2.5]),
        ("FP64", [1e300, -1e-300], [1e300, -1e-300]),
        ("BYTES", ["a", "é"], ["a", "é"]),
    ],
)
def test_every_datatype_is_decoded(
    datatype: str, data: list[Any], expected: list[Any]
) -> None:
    (array,) = v2(tensor(datatype=datatype, data=data), one_input(datatype)).values()
    assert array.dtype == V2_TO_NUMPY[datatype]
    assert array.shape == (1, 2)
    assert array.ravel().tolist() == expected


def test_datatype_names_are_read_in_any_case() -> None:
    (array,) = v2(tensor(datatype="fp32", data=[1, 2]), one_input("FP32")).values()
    assert array.dtype == np.float32


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("BOOL", [1, 0], "1 is not a boolean, model expects BOOL"),
        ("BOOL", [True, None], "null is not a boolean, model expects BOOL"),
        ("INT8", [127, 128], "128 is out of range for INT8 (-128 to 127)"),
        ("INT8", [-129, 0], "-129 is out of range for INT8 (-128 to 127)"),
        ("UINT8", [0, -1], "-1 is out of range for UINT8 (0 to 255)"),
        ("UINT8", [0, 256], "256 is out of range for UINT8 (0 to 255)"),
        ("INT16", [0, 2**15], "32768 is out of range for INT16 (-32768 to 32767)"),
        ("UINT16", [0, 2**16], "65536 is out of range for UINT16 (0 to 65535)"),
        (
            "INT32",
            [0, 2**31],
            "2147483648 is out of range for INT32 (-2147483648 to 2147483647)",
        ),
        ("UINT32", [0, -5], "-5 is out of range for UINT32 (0 to 4294967295)"),
        (
            "INT64",
            [0, 2**63],
            "9223372036854775808 is out of range for INT64 "
            "(-9223372036854775808 to 9223372036854775807)",
        ),
        (
            "INT64",
            [-1, 2**63],
            "9223372036854775808 is out of range for INT64 "
            "(-9223372036854775808 to 9223372036854775807)",
        ),
        (
            "INT64",
            [0, 2.0**63],
            "9.223372036854776e+18 is out of range for INT64 "
            "(-9223372036854775808 to 9223372036854775807)",
        ),
        (
            "UINT64",
            [0, 2**64],
            "18446744073709551616 is out of range for UINT64 "
            "(0 to 18446744073709551615)",
        ),
        ("INT32", [1, 1.5], "1.5 is not an integer, model expects INT32"),
        ("INT32", [1, float("nan")], "NaN is not an integer, model expects INT32"),
        ("INT32", [1, float("inf")], "Infinity is not an integer, model expects INT32"),
        ("INT32", [True, False], "true is not a number, model expects INT32"),
        ("INT32", [1, "2"], '"2" is not a number, model expects INT32'),
        ("FP32", [1, "2"], '"2" is not a number, model expects FP32'),
        ("FP32", [1, None], "null is not a number, model expects FP32"),
        ("FP32", [1, {"a": 1}], '{"a": 1} is not a number, model expects FP32'),
        ("FP32", [False, True], "false is not a number, model expects FP32"),
        ("FP32", [1, 1e39], "1e+39 is out of range for FP32"),
        (
            "FP32",
            [1, 10**400],
            "1000000000000000000000000000000000000... is out of range for FP32",
        ),
        ("FP16", [1, 65520], "65520 is out of range for FP16"),
        (
            "FP32",
            [1, float("nan")],
            "NaN is not a finite number; this model does not take NaN or Infinity",
        ),
        (
            "FP64",
            [float("-inf"), 1],
            "-Infinity is not a finite number; this model "
            "does not take NaN or Infinity",
        ),
        ("BYTES", ["a", 1], "1 is not a string, model expects BYTES"),
        ("BYTES", ["a", None], "null is not a string, model expects BYTES"),
    ],
)
def test_values_that_do_not_fit_the_datatype_are_refused(
    datatype: str, data: list[Any], message: str
) -> None:
    document = tensor(datatype=datatype, data=data)
    assert refusal(v2, document, one_input(datatype)) == f"inputs[0].data: {message}"


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        ("FP16", 65504.0),
        ("FP32", 3.4028234663852886e38),
        # Past the largest FP32 value, but it rounds to it: not an overflow.
        ("FP32", 3.4028235e38),
        ("FP64", 1.7976931348623157e308),
    ],
)
def test_floats_up_to_the_largest_of_their_datatype_are_read(
    datatype: str, value: float
) -> None:
    document = tensor(datatype=datatype, data=[value, -value])
    (array,) = v2(document, one_input(datatype)).values()
    largest = float(np.finfo(array.dtype).max)
    assert array.ravel().tolist() == [largest, -largest]


def test_a_model_tagged_for_it_takes_nan_and_infinity() -> None:
    target = manifest(
        Signature(inputs=(TensorSpec("x", "FP32", (-1, 2)),), outputs=()),
        tags={"turnout.non_finite": "allow"},
    )
    (array,) = v2(
        tensor(datatype="FP32", data=[float("nan"), float("inf")]), target
    ).values()
    assert np.isnan(array[0, 0]) and np.isinf(array[0, 1])
    # An overflow is still a mistake, and integers still cannot hold NaN.
    message = refusal(v2, tensor(datatype="FP32", data=[1, 1e39]), target)
    assert message == "inputs[0].data: 1e+39 is out of range for FP32"


# -- V2 structure ----------------------------------------------------------------------


def iris_input(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "float_input",
        "shape": [2, 4],
        "datatype": "FP32",
        "data": [[1, 2, 3, 4], [5, 6, 7, 8]],
    }
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not None}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], 'body: expected a JSON object {"inputs": [...]}'),
        ({}, "inputs: expected a non-empty list of tensors"),
        ({"inputs": {}}, "inputs: expected a non-empty list of tensors"),
        (
            {"inputs": [7]},
            "inputs[0]: expected an object with name, shape, datatype and data",
        ),
        (
            {"inputs": [iris_input(name="")]},
            "inputs[0].name: missing; give the input's name",
        ),
        (
            {"inputs": [iris_input(shape="2,4")]},
            "inputs[0].shape: expected a list of at most 64 non-negative integers, "
            "each below 2**63",
        ),
        (
            {"inputs": [iris_input(shape=[2, -4])]},
            "inputs[0].shape: expected a list of at most 64 non-negative integers, "
            "each below 2**63",
        ),
        (
            {"inputs": [iris_input(shape=[2, True])]},
            "inputs[0].shape: expected a list of at most 64 non-negative integers, "
            "each below 2**63",
        ),
        (
            {"inputs": [iris_input(shape=[2, 2**63])]},
            "inputs[0].shape: expected a list of at most 64 non-negative integers, "
            "each below 2**63",
        ),
        (
            {"inputs": [iris_input(shape=[1] * 65)]},
            "inputs[0].shape: expected a list of at most 64 non-negative integers, "
            "each below 2**63",
        ),
        (
            {"inputs": [iris_input(), iris_input(name="b"), iris_input(name="c")]},
            "inputs: 3 inputs, the model takes 1 (float_input)",
        ),
        (
            {"inputs": [iris_input(datatype=None)]},
            "inputs[0].datatype: missing; give "
            "one of BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, "
            "FP16, FP32, FP64, BYTES",
        ),
        (
            {"inputs": [iris_input(datatype="FLOAT32")]},
            "inputs[0].datatype: unknown "
            "datatype 'FLOAT32'; use one of BOOL, INT8, INT16, INT32, INT64, UINT8, "
            "UINT16, UINT32, UINT64, FP16, FP32, FP64, BYTES",
        ),
        ({"inputs": [iris_input(data=None)]}, "inputs[0].data: missing"),
        (
            {"inputs": [iris_input(data=5)]},
            "inputs[0].data: expected a list of values (flat row-major, or nested)",
        ),
        (
            {"inputs": [iris_input(parameters=[])]},
            "inputs[0].parameters: expected an object",
        ),
        (
            {"inputs": [iris_input(), iris_input()]},
            "inputs[1].name: 'float_input' given twice",
        ),
        ({"inputs": [iris_input()], "id": 5}, "id: expected a string"),
        (
            {"inputs": [iris_input()], "parameters": "x"},
            "parameters: expected an object",
        ),
        (
            {"inputs": [iris_input()], "outputs": "label"},
            'outputs: expected a list of {"name": ...} objects',
        ),
        (
            {"inputs": [iris_input()], "outputs": [{}]},
            "outputs[0].name: missing; give the output's name",
        ),
        (
            {"inputs": [iris_input()], "outputs": [{"name": "label"}, {"name": "x"}]},
            "outputs[1].name: unknown output 'x'; the model has label, probabilities",
        ),
        (
            {"inputs": [iris_input(name="petal")]},
            "inputs[0].name: unknown input 'petal'; the model takes float_input",
        ),
        (
            {"inputs": [iris_input(datatype="FP64")]},
            "inputs[0].datatype: FP64, model expects FP32",
        ),
        (
            {"inputs": [iris_input(shape=[8])]},
            "inputs[0].shape: [8] has 1 dimension, model expects 2 [-1, 4]",
        ),
        (
            {"inputs": [iris_input(shape=[4, 2])]},
            "inputs[0].shape: [4, 2] has 2 values per row, model expects 4",
        ),
        (
            {"inputs": [iris_input(shape=[0, 4], data=[])]},
            "inputs[0].shape: [0, 4] holds no values",
        ),
        (
            {"inputs": [iris_input(data=[1, 2, 3, 4, 5, 6, 7])]},
            "inputs[0].data: 7 values, shape [2, 4] needs 8",
        ),
        (
            {"inputs": [iris_input(shape=[1, 4])]},
            "inputs[0].data: 8 values, shape [1, 4] needs 4",
        ),
        (
            {"inputs": [iris_input(data=[[1, 2, 3], [4, 5, 6]])]},
            "inputs[0].data: 3 values per row, model expects 4",
        ),
        (
            {"inputs": [iris_input(data=[[1, 2, 3, 4], [5, 6, 7]])]},
            "inputs[0].data: nested lists of different lengths",
        ),
    ],
)
def test_v2_structure_refusals(document: Any, message: str) -> None:
    assert refusal(v2, document) == message


def test_a_missing_input_is_named() -> None:
    two = manifest(
        Signature(
            inputs=(TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "INT64", (-1,))),
            outputs=(TensorSpec("y", "FP32", (-1, 1)),),
        ),
        labels=None,
    )
    document = {
        "inputs": [{"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]
    }
    assert (
        refusal(v2, document, two) == "inputs: missing input 'b'; the model takes a, b"
    )


def test_flat_and_nested_data_give_the_same_array() -> None:
    flat = v2({"inputs": [iris_input(data=list(range(8)))]})
    nested = v2({"inputs": [iris_input(data=[[0, 1, 2, 3], [4, 5, 6, 7]])]})
    np.testing.assert_array_equal(flat["float_input"], nested["float_input"])
    assert flat["float_input"].shape == (2, 4)


def test_a_dynamic_last_dimension_takes_any_row_length() -> None:
    target = one_input("FP32", (-1, -1))
    document = tensor(shape=[2, 3], datatype="FP32", data=[[1, 2, 3], [4, 5, 6]])
    assert v2(document, target)["x"].shape == (2, 3)
    mismatch = tensor(shape=[2, 3], datatype="FP32", data=[[1, 2], [3, 4], [5, 6]])
    assert refusal(v2, mismatch, target) == (
        "inputs[0].data: 2 values per row, shape says 3"
    )


def test_rows_over_the_limit_are_refused_before_the_data_is_read() -> None:
    document = {"inputs": [iris_input(shape=[3, 4], data="not even a list")]}
    with pytest.raises(TooManyRowsError) as caught:
        v2(document, max_rows=2)
    assert caught.value.message == (
        "inputs[0].shape: 3 rows, over the limit of 2 per request "
        "(TURNOUT_MAX_ROWS): split the request, or run a batch job"
    )


def test_the_request_id_outputs_and_parameters_are_read() -> None:
    request = read_infer_request(
        json.dumps(
            {
                "id": "r-1",
                "inputs": [iris_input()],
                "outputs": [
                    {"name": "probabilities", "parameters": {"binary_data": True}}
                ],
                "parameters": {"alias": "prod", "unknown": [1]},
            }
        ).encode(),
        None,
    )
    assert request.id == "r-1"
    assert request.outputs == ("probabilities",)
    assert request.parameters == {"alias": "prod", "unknown": [1]}
    empty = read_infer_request(
        json.dumps({"inputs": [iris_input()], "outputs": []}).encode(), None
    )
    assert (empty.id, empty.outputs, empty.parameters) == (None, None, {})


# -- binary tensor data extension ------------------------------------------------------


def binary_body(
    entries: list[tuple[dict[str, Any], bytes]], **document: Any
) -> tuple[bytes, str]:
    header = json.dumps(
        {
            "inputs": [
                {**entry, "parameters": {"binary_data_size": len(data)}}
                for entry, data in entries
            ],
            **document,
        }
    ).encode()
    return header + b"".join(data for _, data in entries), str(len(header))


def strings(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("BOOL", [True, False, True, True]),
        ("INT8", [-1, 2, -3, 4]),
        ("UINT16", [1, 2, 65535, 4]),
        ("INT32", [-(2**31), 0, 1, 2**31 - 1]),
        ("INT64", [-(2**63), 0, 1, 2**63 - 1]),
        ("UINT64", [0, 1, 2, 2**64 - 1]),
        ("FP16", [0.5, -1.5, 2.0, 65504.0]),
        ("FP32", [0.25, -1.5, 2.0, 3.0]),
        ("FP64", [1e-300, -1.5, 2.0, 1e300]),
    ],
)
def test_binary_data_of_every_fixed_size_type_is_decoded(
    datatype: str, values: list[Any]
) -> None:
    data = np.array(values, dtype=V2_TO_NUMPY[datatype].newbyteorder("<")).tobytes()
    entry = {"name": "x", "shape": [2, 2], "datatype": datatype}
    body, header = binary_body([(entry, data)])
    (array,) = v2(None, one_input(datatype), header=header, body=body).values()
    assert array.dtype == V2_TO_NUMPY[datatype]
    assert array.ravel().tolist() == values


def test_binary_bytes_elements_are_read_with_their_lengths() -> None:
    entry = {"name": "x", "shape": [1, 3], "datatype": "BYTES"}
    body, header = binary_body([(entry, strings(b"ab", b"", "é".encode()))])
    (array,) = v2(None, one_input("BYTES", (-1, 3)), header=header, body=body).values()
    assert array.tolist() == [["ab", "", "é"]]


def test_binary_and_json_inputs_mix_in_order() -> None:
    two = manifest(
        Signature(
            inputs=(
                TensorSpec("a", "FP32", (-1, 2)),
                TensorSpec("b", "INT64", (-1,)),
                TensorSpec("c", "FP64", (-1,)),
            ),
            outputs=(),
        ),
        labels=None,
    )
    a = (
        {"name": "a", "shape": [1, 2], "datatype": "FP32"},
        np.array([1, 2], "<f4").tobytes(),
    )
    c = (
        {"name": "c", "shape": [1], "datatype": "FP64"},
        np.array([7], "<f8").tobytes(),
    )
    body, header = binary_body([a, c])
    document = json.loads(body[: int(header)])
    document["inputs"].insert(
        1, {"name": "b", "shape": [1], "datatype": "INT64", "data": [9]}
    )
    text = json.dumps(document).encode()
    arrays = v2(None, two, header=str(len(text)), body=text + body[int(header) :])
    assert [arrays[name].tolist() for name in "abc"] == [[[1.0, 2.0]], [9], [7.0]]


FP32_ENTRY = {"name": "x", "shape": [1, 2], "datatype": "FP32"}


@pytest.mark.parametrize(
    ("entry", "data", "message"),
    [
        (
            FP32_ENTRY,
            b"\x00" * 4,
            "inputs[0].parameters.binary_data_size: 4 bytes, "
            "shape [1, 2] of FP32 needs 8",
        ),
        (
            {**FP32_ENTRY, "datatype": "BOOL"},
            b"\x01\x02",
            "inputs[0]: BOOL bytes are 0 or 1, found 2",
        ),
        (
            FP32_ENTRY,
            np.array([1, np.nan], "<f4").tobytes(),
            "inputs[0]: NaN is not "
            "a finite number; this model does not take NaN or Infinity",
        ),
        (
            {**FP32_ENTRY, "datatype": "BYTES"},
            strings(b"a"),
            "inputs[0].parameters.binary_data_size: 1 BYTES element, the shape needs 2",
        ),
        (
            {**FP32_ENTRY, "datatype": "BYTES"},
            strings(b"a") + b"\x01\x00",
            "inputs[0].parameters.binary_data_size: BYTES data ends inside an "
            "element's 4-byte length",
        ),
        (
            {**FP32_ENTRY, "datatype": "BYTES"},
            struct.pack("<I", 9) + b"abc",
            "inputs[0].parameters.binary_data_size: BYTES element 0 is 9 bytes long, "
            "only 3 are left",
        ),
        (
            {**FP32_ENTRY, "datatype": "BYTES"},
            strings(b"\xff", b"a"),
            "inputs[0].parameters.binary_data_size: BYTES element 0 is not UTF-8 text",
        ),
    ],
)
def test_malformed_binary_data_is_refused(
    entry: dict[str, Any], data: bytes, message: str
) -> None:
    body, header = binary_body([(entry, data)])
    assert (
        refusal(v2, None, one_input(entry["datatype"]), header=header, body=body)
        == message
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("abc", "Inference-Header-Content-Length: 'abc' is not a byte count"),
        ("-5", "Inference-Header-Content-Length: '-5' is not a byte count"),
        ("0", "Inference-Header-Content-Length: 0 bytes, but the body has {size}"),
        (
            "99999",
            "Inference-Header-Content-Length: 99999 bytes, but the body has {size}",
        ),
    ],
)
def test_a_bad_header_length_is_refused(header: str, message: str) -> None:
    body, _ = binary_body([(FP32_ENTRY, b"\x00" * 8)])
    assert refusal(read_infer_request, body, header) == message.format(size=len(body))


def test_binary_size_beyond_the_body_or_left_over_is_refused() -> None:
    body, header = binary_body([(FP32_ENTRY, b"\x00" * 8)])
    assert refusal(read_infer_request, body[:-1], header) == (
        "inputs[0].parameters.binary_data_size: 8 bytes, but only 7 bytes of "
        "binary data are left in the body"
    )
    assert refusal(read_infer_request, body + b"??", header) == (
        "body: 2 bytes of binary data after the JSON header belong to no input "
        "(parameters.binary_data_size)"
    )


@pytest.mark.parametrize("size", [-1, 1.5, "8", True])
def test_a_binary_size_must_be_a_byte_count(size: Any) -> None:
    header = json.dumps(
        {"inputs": [{**FP32_ENTRY, "parameters": {"binary_data_size": size}}]}
    ).encode()
    assert refusal(read_infer_request, header, str(len(header))) == (
        "inputs[0].parameters.binary_data_size: expected a non-negative integer"
    )


# -- encoding --------------------------------------------------------------------------


def test_non_finite_outputs_become_null_and_bytes_become_text() -> None:
    assert json_values(np.array([[1.5, np.nan], [np.inf, -np.inf]], np.float32)) == [
        [1.5, None],
        [None, None],
    ]
    assert json_values(np.array([b"a", "b"], dtype=object)) == ["a", "b"]
    assert json_values(np.array([True, False])) == [True, False]
    assert json_values(np.array([1, 2], np.uint8)) == [1, 2]


def test_the_v2_response_is_flat_row_major_and_typed() -> None:
    outputs: dict[str, np.ndarray] = {
        "label": np.array([0, 2], np.int64),
        "probabilities": np.array([[0.5, 0.25, 0.25], [0, 0, 1]], np.float32),
    }
    body = encode_infer_response(
        outputs, model_name="iris", model_version=2, request_id="a"
    )
    assert body == {
        "model_name": "iris",
        "model_version": "2",
        "id": "a",
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 2]},
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [2, 3],
                "data": [0.5, 0.25, 0.25, 0.0, 0.0, 1.0],
            },
        ],
    }
    assert "id" not in encode_infer_response(
        outputs, model_name="iris", model_version=2, request_id=None
    )
    json.dumps(body, allow_nan=False)
