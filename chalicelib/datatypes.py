"""Open Inference Protocol datatypes and their onnxruntime and numpy twins."""

from __future__ import annotations

import numpy as np

# ONNX Runtime type string -> Open Inference Protocol (V2) datatype.
ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# V2 datatype -> numpy dtype used to hold it. BYTES travel as object arrays of str.
V2_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
INTEGER_TYPES = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)


def v2_datatype(ort_type: str) -> str:
    """The V2 datatype of an onnxruntime type; non-tensor types keep their ORT name."""
    return ORT_TO_V2.get(ort_type, ort_type)


def numpy_to_v2(dtype: np.dtype[np.generic]) -> str:
    """The V2 datatype for a numpy array's dtype (str and object arrays are BYTES)."""
    if dtype.kind in {"U", "S", "O"}:
        return "BYTES"
    for name, candidate in V2_TO_NUMPY.items():
        if candidate == dtype:
            return name
    raise ValueError(f"no Open Inference Protocol datatype for numpy {dtype}")
