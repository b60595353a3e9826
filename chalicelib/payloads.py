"""JSON <-> numpy for the REST protocols, checked against a version's manifest (pure).

Two request formats: the Open Inference Protocol (KServe V2) with its binary
tensor data extension, and ``{"instances": [...]}`` rows for people with curl.
Requests are decoded against the signature of the version that answers, and
every refusal is an InvalidInputError naming the field and what was expected,
before onnxruntime sees anything.

What each datatype accepts is :mod:`chalicelib.values`' rules, the ones batch
files follow too. Where the protocol leaves a choice:

- JSON has no NaN or Infinity. The tokens ``NaN``, ``Infinity`` and ``-Infinity``
  (what Python's and numpy's JSON writers emit) are read, then refused unless the
  model takes them (see :mod:`chalicelib.values`). Non-finite outputs are written
  as ``null``, so answers are always strict JSON.
- Every request costs time linear in its size: JSON nesting, integer literals
  and the number of inputs are bounded before any per-value work.
- Binary tensor data extension: any input may come as binary data (little-endian,
  row-major, BOOL one byte, BYTES a 4-byte little-endian length before each
  element), after a JSON header of ``Inference-Header-Content-Length`` bytes.
  Answers are always JSON, which every client of the protocol reads (API Gateway
  would otherwise need an Accept header to return binary bodies).
"""

from __future__ import annotations

import functools
import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.datatypes import FLOAT_TYPES, V2_TO_NUMPY, numpy_to_v2
from chalicelib.errors import InvalidInputError, TooManyRowsError
from chalicelib.registry.manifest import (
    Manifest,
    Signature,
    TensorSpec,
    classifier_outputs,
)
from chalicelib.values import (
    LONG_NUMBER,
    MAX_NESTING,
    CheckedInputs,
    ValueRefused,
    accepts_non_finite,
    check_floats,
    shorten,
    to_array,
)

BINARY_HEADER = "Inference-Header-Content-Length"
_DATATYPES = ", ".join(V2_TO_NUMPY)
_BINARY_HINT = f" (binary tensor data needs the {BINARY_HEADER} header)"
# A byte count: ASCII digits only (str.isdigit() takes "²", int() refuses it).
_BYTE_COUNT = re.compile(r"\s*0*([0-9]+)\s*")
# numpy_to_v2 searches its table: answers name the same few dtypes every time.
_output_datatype = functools.cache(numpy_to_v2)


# Built for every request: a frozen dataclass would cost three times as much.
@dataclass(slots=True)
class TensorInput:
    """One entry of a V2 request's ``inputs``: its structure checked, its data not
    yet (that needs the signature of the version that answers)."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: Any = None
    binary: bytes | None = None


@dataclass(slots=True)
class InferRequest:
    """A V2 inference request, read but not yet decoded."""

    inputs: tuple[TensorInput, ...]
    outputs: tuple[str, ...] | None
    id: str | None
    parameters: Mapping[str, Any]


# -- reading requests ------------------------------------------------------------------


def parse_json(body: bytes, trailing_hint: str = "") -> Any:
    """The JSON document in ``body``; InvalidInputError naming the problem if it
    is not JSON, with ``trailing_hint`` when something follows the JSON or the
    body is not text (binary data, say). NaN and Infinity tokens are read (see
    the module docstring)."""
    if not body or body.isspace():
        raise InvalidInputError("body", "empty; send a JSON object")
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        problem = (
            f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}"
        )
        if error.msg == "Extra data":
            problem += trailing_hint
    except UnicodeDecodeError:
        problem = "not UTF-8 text" + trailing_hint
    except RecursionError:
        problem = "malformed JSON: nested too deeply"
    except ValueError:
        problem = LONG_NUMBER  # the only other refusal
    raise InvalidInputError("body", problem)


def read_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Read a V2 request: its JSON (the first ``header_length`` bytes when the
    binary extension's header is given) and any binary tensor data after it."""
    binary = b""
    if header_length is not None:
        length = _header_length(header_length, len(body))
        body, binary = body[:length], body[length:]
    document = parse_json(body, "" if header_length is not None else _BINARY_HINT)
    if not isinstance(document, dict):
        raise InvalidInputError("body", 'expected a JSON object {"inputs": [...]}')
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError("id", "expected a string")
    entries = document.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise InvalidInputError("inputs", "expected a non-empty list of tensors")
    inputs: list[TensorInput] = []
    names: set[str] = set()
    offset = 0
    for index, entry in enumerate(entries):
        field = f"inputs[{index}]"
        tensor, offset = _read_tensor(
            entry, field, binary if header_length is not None else None, offset
        )
        if tensor.name in names:
            raise InvalidInputError(f"{field}.name", f"{tensor.name!r} given twice")
        names.add(tensor.name)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInputError(
            "body",
            f"{len(binary) - offset} bytes of binary data after the JSON header "
            "belong to no input (parameters.binary_data_size)",
        )
    return InferRequest(
        inputs=tuple(inputs),
        outputs=_read_outputs(document.get("outputs")),
        id=request_id,
        parameters=_parameters(document.get("parameters"), "parameters"),
    )


def _header_length(value: str, body_size: int) -> int:
    digits = _BYTE_COUNT.fullmatch(value)
    if digits is None:
        raise InvalidInputError(
            BINARY_HEADER, f"{shorten(repr(value))} is not a byte count"
        )
    # More digits than the body's size has bytes cannot fit: do not read them.
    text = digits.group(1)
    length = int(text) if len(text) <= len(str(body_size)) else body_size + 1
    if not 0 < length <= body_size:
        raise InvalidInputError(
            BINARY_HEADER, f"{shorten(text)} bytes, but the body has {body_size}"
        )
    return length


def _parameters(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(field, "expected an object")
    return value


def _read_tensor(
    entry: Any, field: str, binary: bytes | None, offset: int
) -> tuple[TensorInput, int]:
    """One input and the offset of the binary data after it (``binary`` is None
    when the request has no binary extension header)."""
    if not isinstance(entry, dict):
        raise InvalidInputError(
            field, "expected an object with name, shape, datatype and data"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{field}.name", "missing; give the input's name")
    shape = entry.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NESTING
        or not all(
            isinstance(dim, int) and not isinstance(dim, bool) and 0 <= dim < 2**63
            for dim in shape
        )
    ):
        raise InvalidInputError(
            f"{field}.shape",
            f"expected a list of at most {MAX_NESTING} non-negative integers, "
            "each below 2**63",
        )
    datatype = entry.get("datatype")
    if not isinstance(datatype, str) or not datatype:
        raise InvalidInputError(
            f"{field}.datatype", f"missing; give one of {_DATATYPES}"
        )
    upper = datatype.upper()
    if upper not in V2_TO_NUMPY:
        raise InvalidInputError(
            f"{field}.datatype",
            f"unknown datatype {datatype!r}; use one of {_DATATYPES}",
        )
    parameters = _parameters(entry.get("parameters"), f"{field}.parameters")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in entry:
            raise InvalidInputError(f"{field}.data", "missing")
        return TensorInput(name, tuple(shape), upper, data=entry["data"]), offset
    size_field = f"{field}.parameters.binary_data_size"
    if "data" in entry:
        raise InvalidInputError(
            field, "give data or parameters.binary_data_size, not both"
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInputError(size_field, "expected a non-negative integer")
    if binary is None:
        raise InvalidInputError(
            size_field,
            f"given, but the request has no {BINARY_HEADER} header to say where "
            "the binary data starts",
        )
    if offset + size > len(binary):
        raise InvalidInputError(
            size_field,
            f"{size} bytes, but only {len(binary) - offset} bytes of binary data "
            "are left in the body",
        )
    tensor = TensorInput(
        name, tuple(shape), upper, binary=binary[offset : offset + size]
    )
    return tensor, offset + size


def _read_outputs(value: Any) -> tuple[str, ...] | None:
    """Names of the outputs asked for; None (all of them) when none are named."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInputError("outputs", 'expected a list of {"name": ...} objects')
    names = []
    for index, entry in enumerate(value):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidInputError(
                f"outputs[{index}].name", "missing; give the output's name"
            )
        names.append(name)
    return tuple(names) or None


# -- decoding against a signature ------------------------------------------------------


def decode_inputs(
    request: InferRequest, manifest: Manifest, *, max_rows: int
) -> CheckedInputs:
    """The request's inputs as arrays that fit ``manifest``'s signature.

    Checks first that the request names no more inputs than the model has, then
    every input's name, datatype, shape, row count (TooManyRowsError over
    ``max_rows``) and values, that none is missing, and the outputs asked for.
    """
    signature = manifest.signature
    if len(request.inputs) > len(signature.inputs):
        raise InvalidInputError(
            "inputs",
            f"{_count(len(request.inputs), 'input')}, the model takes "
            f"{len(signature.inputs)} ({_names(signature.inputs)})",
        )
    allow_non_finite = accepts_non_finite(manifest)
    arrays = CheckedInputs()
    for index, tensor in enumerate(request.inputs):
        field = f"inputs[{index}]"
        spec = signature.input(tensor.name)
        if spec is None:
            raise InvalidInputError(
                f"{field}.name",
                f"unknown input {tensor.name!r}; the model takes "
                f"{_names(signature.inputs)}",
            )
        if tensor.datatype != spec.datatype:
            raise InvalidInputError(
                f"{field}.datatype",
                f"{tensor.datatype}, model expects {spec.datatype}",
            )
        _check_shape(tensor.shape, spec, f"{field}.shape")
        if tensor.shape and tensor.shape[0] > max_rows:
            raise TooManyRowsError(f"{field}.shape", tensor.shape[0], max_rows)
        if tensor.binary is not None:
            array = _from_binary(tensor, field, allow_non_finite)
        else:
            array = _from_data(tensor, spec, field, allow_non_finite)
        arrays[tensor.name] = array
    missing = [spec.name for spec in signature.inputs if spec.name not in arrays]
    if missing:
        raise InvalidInputError(
            "inputs",
            f"missing input {missing[0]!r}; the model takes {_names(signature.inputs)}",
        )
    for index, name in enumerate(request.outputs or ()):
        if signature.output(name) is None:
            raise InvalidInputError(
                f"outputs[{index}].name",
                f"unknown output {name!r}; the model has {_names(signature.outputs)}",
            )
    return arrays


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _names(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(spec.name for spec in specs)


def _check_shape(shape: tuple[int, ...], spec: TensorSpec, field: str) -> None:
    if len(shape) != len(spec.shape):
        raise InvalidInputError(
            field,
            f"{list(shape)} has {_count(len(shape), 'dimension')}, model expects "
            f"{len(spec.shape)} {list(spec.shape)}",
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if want >= 0 and got != want:
            if axis > 0 and axis == len(shape) - 1:
                problem = f"{got} values per row, model expects {want}"
            else:
                problem = f"dimension {axis} is {got}, model expects {want}"
            raise InvalidInputError(field, f"{list(shape)} has {problem}")
    if 0 in shape:
        raise InvalidInputError(field, f"{list(shape)} holds no values")


def _from_data(
    tensor: TensorInput, spec: TensorSpec, field: str, allow_non_finite: bool
) -> np.ndarray:
    if not isinstance(tensor.data, list):
        raise InvalidInputError(
            f"{field}.data", "expected a list of values (flat row-major, or nested)"
        )
    try:
        array = to_array(tensor.data, tensor.datatype, allow_non_finite)
    except ValueRefused as error:
        raise InvalidInputError(f"{field}.data", str(error)) from None
    shape = tensor.shape
    if array.ndim > 1 and array.shape[-1] != shape[-1]:
        expects = "model expects" if spec.shape[-1] >= 0 else "shape says"
        raise InvalidInputError(
            f"{field}.data", f"{array.shape[-1]} values per row, {expects} {shape[-1]}"
        )
    needed = math.prod(shape)
    if array.size != needed:
        raise InvalidInputError(
            f"{field}.data", f"{array.size} values, shape {list(shape)} needs {needed}"
        )
    return array.reshape(shape)


def _from_binary(tensor: TensorInput, field: str, allow_non_finite: bool) -> np.ndarray:
    assert tensor.binary is not None
    data, shape, datatype = tensor.binary, tensor.shape, tensor.datatype
    count = math.prod(shape)
    size_field = f"{field}.parameters.binary_data_size"
    if datatype == "BYTES":
        return np.array(_read_strings(data, count, size_field), dtype=object).reshape(
            shape
        )
    dtype = V2_TO_NUMPY[datatype]
    needed = count * dtype.itemsize
    if len(data) != needed:
        raise InvalidInputError(
            size_field,
            f"{len(data)} bytes, shape {list(shape)} of {datatype} needs {needed}",
        )
    if datatype == "BOOL":
        raw = np.frombuffer(data, dtype=np.uint8)
        if (raw > 1).any():
            raise InvalidInputError(
                field, f"BOOL bytes are 0 or 1, found {int(raw[raw > 1][0])}"
            )
        return raw.astype(np.bool_).reshape(shape)
    array = np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype)
    if datatype in FLOAT_TYPES:
        try:
            check_floats(array, array, datatype, allow_non_finite)
        except ValueRefused as error:
            raise InvalidInputError(field, str(error)) from None
    return array.reshape(shape)


def _read_strings(data: bytes, count: int, field: str) -> list[str]:
    """BYTES elements: each a 4-byte little-endian length, then UTF-8 text."""
    items: list[str] = []
    position = 0
    while position < len(data):
        if position + 4 > len(data):
            raise InvalidInputError(
                field, "BYTES data ends inside an element's 4-byte length"
            )
        (length,) = struct.unpack_from("<I", data, position)
        position += 4
        if position + length > len(data):
            raise InvalidInputError(
                field,
                f"BYTES element {len(items)} is {length} bytes long, "
                f"only {len(data) - position} are left",
            )
        try:
            items.append(data[position : position + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInputError(
                field, f"BYTES element {len(items)} is not UTF-8 text"
            ) from None
        position += length
    if len(items) != count:
        raise InvalidInputError(
            field, f"{_count(len(items), 'BYTES element')}, the shape needs {count}"
        )
    return items


# -- instances -------------------------------------------------------------------------


def decode_instances(
    document: Any, manifest: Manifest, *, max_rows: int
) -> CheckedInputs:
    """``{"instances": [...]}`` as arrays that fit ``manifest``'s signature: each
    instance a row (a list for a single-input model) or an object keyed by input
    name. TooManyRowsError over ``max_rows`` rows."""
    if not isinstance(document, dict) or "instances" not in document:
        raise InvalidInputError("body", 'expected a JSON object {"instances": [...]}')
    instances = document["instances"]
    if not isinstance(instances, list) or not instances:
        raise InvalidInputError("instances", "expected a non-empty list of rows")
    if len(instances) > max_rows:
        raise TooManyRowsError("instances", len(instances), max_rows)
    signature = manifest.signature
    allow_non_finite = accepts_non_finite(manifest)
    if isinstance(instances[0], dict):
        _check_keyed_rows(instances, signature)
        return CheckedInputs(
            (
                spec.name,
                _rows_to_array(
                    [row[spec.name] for row in instances],
                    spec,
                    allow_non_finite,
                    f".{spec.name}",
                ),
            )
            for spec in signature.inputs
        )
    if len(signature.inputs) != 1:
        raise InvalidInputError(
            "instances[0]",
            f"a list, but the model takes several inputs ({_names(signature.inputs)}):"
            " send each row as an object keyed by input name",
        )
    spec = signature.inputs[0]
    return CheckedInputs(
        {spec.name: _rows_to_array(instances, spec, allow_non_finite, "")}
    )


def _check_keyed_rows(instances: list[Any], signature: Signature) -> None:
    names = {spec.name for spec in signature.inputs}
    for index, row in enumerate(instances):
        field = f"instances[{index}]"
        if not isinstance(row, dict):
            raise InvalidInputError(
                field, "expected an object keyed by input name, like instances[0]"
            )
        unknown = sorted(set(row) - names)
        if unknown:
            raise InvalidInputError(
                field,
                f"unknown input {unknown[0]!r}; the model takes "
                f"{_names(signature.inputs)}",
            )
        missing = [spec.name for spec in signature.inputs if spec.name not in row]
        if missing:
            raise InvalidInputError(field, f"missing input {missing[0]!r}")


def _rows_to_array(
    rows: list[Any], spec: TensorSpec, allow_non_finite: bool, suffix: str
) -> np.ndarray:
    """One input's rows stacked into a batch of ``spec``'s shape; errors name the
    row as ``instances[i]`` followed by ``suffix`` (``.input_name`` or nothing)."""
    try:
        array = to_array(rows, spec.datatype, allow_non_finite)
    except ValueRefused as error:
        if error.position is None:
            raise _row_shape_error(rows, spec, suffix) from None
        raise InvalidInputError(
            f"instances[{error.position[0]}]{suffix}", str(error)
        ) from None
    if array.ndim != len(spec.shape) or any(
        want >= 0 and got != want
        for got, want in zip(array.shape[1:], spec.shape[1:], strict=True)
    ):
        raise _row_shape_error(rows, spec, suffix)
    return array


def _row_shape_error(
    rows: list[Any], spec: TensorSpec, suffix: str
) -> InvalidInputError:
    """The first row whose shape does not fit ``spec`` (without its batch axis)."""
    expected = spec.shape[1:]
    first = _nested_shape(rows[0])
    for index, row in enumerate(rows):
        field = f"instances[{index}]{suffix}"
        shape = _nested_shape(row)
        if shape is None:
            return InvalidInputError(field, "nested lists of different lengths")
        if len(shape) > MAX_NESTING:
            return InvalidInputError(
                field,
                f"nested more than {MAX_NESTING} lists deep, model expects rows of "
                f"shape {list(expected)}",
            )
        fits = len(shape) == len(expected) and all(
            want < 0 or got == want for got, want in zip(shape, expected, strict=True)
        )
        if not fits:
            return InvalidInputError(field, _shape_problem(shape, expected))
        if shape != first:
            return InvalidInputError(
                field, f"shape {list(shape)}, row 0 has {list(first or ())}"
            )
    return InvalidInputError(
        f"instances{suffix}",
        f"rows do not stack into the model's shape {list(spec.shape)}",
    )


def _shape_problem(shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    if len(expected) == 1 and expected[0] >= 0:
        if len(shape) == 1:
            return f"{shape[0]} features, model expects {expected[0]}"
        if not shape:
            return f"a single value, model expects a row of {expected[0]} features"
    if not expected:
        return f"shape {list(shape)}, model expects a single value per row"
    return f"shape {list(shape)}, model expects {list(expected)}"


def _nested_shape(value: Any) -> tuple[int, ...] | None:
    """The shape of nested lists, () for a scalar, None when they are ragged; it
    stops one level past MAX_NESTING. Level by level: time linear in the values,
    no recursion however deep the nesting."""
    shape: list[int] = []
    level = [value]
    while len(shape) <= MAX_NESTING:
        lists = sum(isinstance(item, list) for item in level)
        if not lists:
            break
        lengths = {len(item) for item in level} if lists == len(level) else set()
        if len(lengths) != 1:
            return None
        shape.append(lengths.pop())
        level = [inner for item in level for inner in item]
    return tuple(shape)


# -- encoding answers ------------------------------------------------------------------


def json_values(array: np.ndarray) -> Any:
    """An array as nested lists of JSON values: non-finite floats become null and
    bytes become text."""
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            values = array.astype(object)
            values[~finite] = None
            return values.tolist()
    elif array.dtype.kind in "OS":
        return np.frompyfunc(_text, 1, 1)(array).tolist()
    return array.tolist()


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def encode_infer_response(
    outputs: Mapping[str, np.ndarray],
    *,
    model_name: str,
    model_version: int,
    request_id: str | None,
) -> dict[str, Any]:
    """A V2 inference response: every output flat, row-major, in JSON."""
    body: dict[str, Any] = {
        "model_name": model_name,
        "model_version": str(model_version),
    }
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = [
        {
            "name": name,
            "datatype": _output_datatype(array.dtype),
            "shape": list(array.shape),
            "data": json_values(array.ravel()),
        }
        for name, array in outputs.items()
    ]
    return body


def encode_predictions(
    manifest: Manifest, outputs: Mapping[str, np.ndarray]
) -> list[Any]:
    """One prediction per row.

    A classifier's is ``{"label": ..., "probabilities": ...}``: the label is the
    class name when the manifest has labels (probabilities then keyed by class
    name), else the model's label (probabilities then a list in class order). A
    single-output model gives its value per row (a number when the row holds one);
    any other model an object of its outputs per row.
    """
    classifier = classifier_outputs(manifest.signature)
    if classifier is not None and classifier.probabilities.name in outputs:
        probabilities = outputs[classifier.probabilities.name]
        if classifier.label is not None and classifier.label.name in outputs:
            labels = json_values(outputs[classifier.label.name].ravel())
        else:
            labels = np.argmax(probabilities, axis=1).tolist()
        names = manifest.labels
        if names is not None:
            labels = [
                names[label]
                if isinstance(label, int) and 0 <= label < len(names)
                else label
                for label in labels
            ]
        rows = json_values(probabilities)
        if names is not None and probabilities.shape[1] == len(names):
            rows = [dict(zip(names, row, strict=True)) for row in rows]
        return [
            {"label": label, "probabilities": row}
            for label, row in zip(labels, rows, strict=True)
        ]
    if len(outputs) == 1:
        (array,) = outputs.values()
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        values: list[Any] = json_values(array)
        return values
    columns = {name: json_values(array) for name, array in outputs.items()}
    rows_count = len(next(iter(columns.values())))
    return [
        {name: column[row] for name, column in columns.items()}
        for row in range(rows_count)
    ]
