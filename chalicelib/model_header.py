"""An ONNX file's header read without the ``onnx`` package: IR version, producer,
opsets and the external data files its initializers name, from a hand walk of
the protobuf's fields (pure)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from chalicelib.errors import InvalidModelError


@dataclass(frozen=True)
class ModelHeader:
    ir_version: int
    producer_version: str
    opset: dict[str, int]


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def _fields(buffer: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """Top-level (field number, value) pairs of a protobuf message."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(buffer, position)
            yield number, value
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            yield number, buffer[position : position + length]
            position += length
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")


def _messages(buffer: memoryview, number: int) -> Iterator[memoryview]:
    """The length-delimited values of field ``number`` in ``buffer``."""
    for field_number, value in _fields(buffer):
        if field_number == number and isinstance(value, memoryview):
            yield value


def external_data_locations(data: bytes) -> list[str]:
    """The external data files the graph's initializers name, in order of first
    mention (ModelProto 7 graph -> GraphProto 5 initializer -> TensorProto 13
    external_data: key 1 ``location``, value 2 the file name). Data that is not
    a protobuf names none: loading it says what is wrong with it."""
    locations: dict[str, None] = {}
    try:
        for graph in _messages(memoryview(data), 7):
            for tensor in _messages(graph, 5):
                for entry in _messages(tensor, 13):
                    pair = {
                        number: bytes(value)
                        for number, value in _fields(entry)
                        if isinstance(value, memoryview)
                    }
                    if pair.get(1) == b"location" and 2 in pair:
                        locations[pair[2].decode("utf-8", "replace")] = None
    except (IndexError, ValueError):
        return []
    return list(locations)


def read_model_header(data: bytes) -> ModelHeader:
    """IR version, producer version and opsets of an ONNX ModelProto.

    Walks the protobuf's top level by hand so that the runtime does not need the
    ``onnx`` package (fields: 1 ir_version, 3 producer_version, 8 opset_import).
    """
    ir_version = 0
    producer_version = ""
    opset: dict[str, int] = {}
    try:
        for number, value in _fields(memoryview(data)):
            if number == 1 and isinstance(value, int):
                ir_version = value
            elif number == 3 and isinstance(value, memoryview):
                producer_version = bytes(value).decode("utf-8", "replace")
            elif number == 8 and isinstance(value, memoryview):
                domain, version = "", 0
                for sub_number, sub_value in _fields(value):
                    if sub_number == 1 and isinstance(sub_value, memoryview):
                        domain = bytes(sub_value).decode("utf-8", "replace")
                    elif sub_number == 2 and isinstance(sub_value, int):
                        version = sub_value
                opset[domain or "ai.onnx"] = version
    except (IndexError, ValueError) as error:
        raise InvalidModelError(f"cannot read the ONNX header: {error}") from None
    return ModelHeader(ir_version, producer_version, opset)
