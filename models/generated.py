"""Initializer-heavy models of any size, generated: a chain of MatMul nodes over
``dimension`` x ``dimension`` float32 weights, for the large-model benchmark
(``bench/bigmodel.py``) and tests. Input ``x`` and output ``y`` are
[rows, dimension] FP32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

DIMENSION = 2048
WEIGHTS_FILE = "weights.bin"


def matmul_chain(
    folder: Path, size_bytes: int, *, external: bool, dimension: int = DIMENSION
) -> Path:
    """Write ``model.onnx`` into ``folder``, about ``size_bytes`` of random
    weights (at least one matrix), and return its path. ``external``: the weights
    go to ``weights.bin`` beside it (ONNX external data), written one matrix at a
    time, so that any size fits in memory and past protobuf's 2 GB."""
    folder.mkdir(parents=True, exist_ok=True)
    matrix_bytes = dimension * dimension * 4
    count = max(1, size_bytes // matrix_bytes)
    generator = np.random.default_rng(0)
    scale = np.float32(1 / np.sqrt(dimension))  # keeps the outputs' scale steady
    initializers, nodes = [], []
    weights = open(folder / WEIGHTS_FILE, "wb") if external else None  # noqa: SIM115
    try:
        for index in range(count):
            matrix = generator.standard_normal((dimension, dimension), np.float32)
            matrix *= scale
            name = f"w{index}"
            if weights is None:
                initializers.append(numpy_helper.from_array(matrix, name))
            else:
                tensor = TensorProto(
                    name=name, data_type=TensorProto.FLOAT, dims=matrix.shape
                )
                tensor.data_location = TensorProto.EXTERNAL
                for key, value in (
                    ("location", WEIGHTS_FILE),
                    ("offset", str(weights.tell())),
                    ("length", str(matrix.nbytes)),
                ):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, value
                weights.write(matrix.tobytes())
                initializers.append(tensor)
            source = "x" if index == 0 else f"h{index - 1}"
            target = "y" if index == count - 1 else f"h{index}"
            nodes.append(helper.make_node("MatMul", [source, name], [target]))
    finally:
        if weights is not None:
            weights.close()
    shape: list[str | int | None] = ["rows", dimension]
    graph = helper.make_graph(
        nodes,
        "matmul_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path
