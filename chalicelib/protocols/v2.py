"""The Open Inference Protocol (KServe V2): requests read, decoded against a
version's signature, and answers encoded (pure).

Binary tensor data extension: any input may come as binary data (little-endian,
row-major, BOOL one byte, BYTES a 4-byte little-endian length before each
element), after a JSON header of ``Inference-Header-Content-Length`` bytes.
Answers are always JSON, which every client of the protocol reads (API Gateway
would otherwise need an Accept header to return binary bodies). What JSON
values are read and written: :mod:`chalicelib.protocols.common`.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.datatypes import FLOAT_TYPES, V2_TO_NUMPY, numpy_to_v2
from chalicelib.errors import InvalidInputError, TooManyRowsError
from chalicelib.protocols.common import json_values, parse_json, spec_names
from chalicelib.registry.manifest import Manifest, TensorSpec
from chalicelib.values import (
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
            f"{len(signature.inputs)} ({spec_names(signature.inputs)})",
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
                f"{spec_names(signature.inputs)}",
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
            f"missing input {missing[0]!r}; the model takes "
            f"{spec_names(signature.inputs)}",
        )
    for index, name in enumerate(request.outputs or ()):
        if signature.output(name) is None:
            raise InvalidInputError(
                f"outputs[{index}].name",
                f"unknown output {name!r}; the model has "
                f"{spec_names(signature.outputs)}",
            )
    return arrays


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


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


# -- encoding answers ------------------------------------------------------------------


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


class V2Codec:
    """The Open Inference Protocol's decoder and encoder (a Codec of
    InferRequest)."""

    def decode(
        self, request: InferRequest, manifest: Manifest, *, max_rows: int
    ) -> CheckedInputs:
        return decode_inputs(request, manifest, max_rows=max_rows)

    def outputs(self, request: InferRequest) -> tuple[str, ...] | None:
        return request.outputs

    def encode(
        self,
        request: InferRequest,
        outputs: Mapping[str, np.ndarray],
        manifest: Manifest,
        alias: str | None,
    ) -> dict[str, Any]:
        return encode_infer_response(
            outputs,
            model_name=manifest.name,
            model_version=manifest.version,
            request_id=request.id,
        )


CODEC = V2Codec()
