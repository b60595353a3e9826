"""Small ONNX models built in tests, for datatypes the demo models do not take."""

from __future__ import annotations

import functools

import onnx
from onnx import TensorProto, helper

# V2 datatype -> ONNX element type.
ELEMENT_TYPES = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


@functools.cache
def identity_model(datatype: str, width: int) -> bytes:
    """A model whose output ``y`` is its input ``x``: ``datatype``, shape
    [rows, width]."""
    element = ELEMENT_TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        f"identity-{datatype.lower()}",
        [helper.make_tensor_value_info("x", element, ["rows", width])],
        [helper.make_tensor_value_info("y", element, ["rows", width])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data
