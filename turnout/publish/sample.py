"""A training sample as a model's inputs see it (pure): its columns, their kinds,
and the arrays that feed an ONNX session.

A DataFrame feeds one input per column, named after it, shaped ``[rows, 1]``:
numbers as floats, anything else as strings. A 2-D array (or a DataFrame of
numbers fed to a model with one input) feeds one input of ``[rows, features]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from chalicelib.errors import TurnoutError

Precision = Literal["float32", "float64"]
FLOAT_TYPES: dict[Precision, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
# The input a plain array feeds, as the demo models and the REST examples name it.
ARRAY_INPUT = "float_input"


class SampleMismatchError(TurnoutError):
    """A sample that does not fit the model's inputs."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the sample does not fit the model: {reason}")


@dataclass(frozen=True)
class InputColumn:
    """One model input: its name, ``numeric`` or ``string``, and its width."""

    name: str
    kind: Literal["numeric", "string"]
    width: int = 1


def is_frame(sample: object) -> bool:
    """True for a pandas DataFrame (checked without importing pandas)."""
    return hasattr(sample, "columns") and hasattr(sample, "iloc")


def row_count(sample: Any) -> int:
    return int(sample.shape[0]) if hasattr(sample, "shape") else len(sample)


def take_rows(sample: Any, rows: npt.NDArray[np.int64]) -> Any:
    """The sample's ``rows`` (positions), of the same type."""
    if is_frame(sample):
        return sample.iloc[rows]
    return np.asarray(sample)[rows]


def input_columns(sample: Any) -> tuple[InputColumn, ...]:
    """The inputs a model converted from this sample takes."""
    if is_frame(sample):
        return tuple(
            InputColumn(
                str(column),
                "numeric" if _is_numeric(sample[column].dtype) else "string",
            )
            for column in sample.columns
        )
    array = np.asarray(sample)
    if array.ndim != 2:
        raise SampleMismatchError(
            f"expected a DataFrame or a 2-D array, got an array of shape "
            f"{list(array.shape)}"
        )
    if not _is_numeric(array.dtype):
        raise SampleMismatchError(
            f"a plain array must hold numbers, this one holds {array.dtype}; pass "
            "a DataFrame to give text columns"
        )
    return (InputColumn(ARRAY_INPUT, "numeric", int(array.shape[1])),)


def feature_names(columns: Sequence[InputColumn]) -> list[str]:
    """One name per feature, as a batch file's columns spell them."""
    names: list[str] = []
    for column in columns:
        if column.width == 1:
            names.append(column.name)
        else:
            names.extend(f"{column.name}_{index}" for index in range(column.width))
    return names


def feeds(
    sample: Any, columns: Sequence[InputColumn], precision: Precision
) -> dict[str, npt.NDArray[Any]]:
    """The arrays that feed ``columns`` from ``sample``: numbers cast to
    ``precision``, text as object arrays of str."""
    float_type = FLOAT_TYPES[precision]
    if is_frame(sample):
        names = [str(column) for column in sample.columns]
        if all(column.name in names for column in columns):
            return {
                column.name: _cast(sample[[column.name]].to_numpy(), column, float_type)
                for column in columns
            }
        array = sample.to_numpy()
    else:
        array = np.asarray(sample)
    if len(columns) != 1:
        wanted = ", ".join(column.name for column in columns)
        raise SampleMismatchError(
            f"the model has inputs {wanted}: give a DataFrame with those columns"
        )
    (column,) = columns
    if array.ndim != 2 or array.shape[1] != column.width:
        raise SampleMismatchError(
            f"input {column.name!r} takes {column.width} features per row, the "
            f"sample has {array.shape[1] if array.ndim == 2 else array.shape}"
        )
    return {column.name: _cast(array, column, float_type)}


def _cast(
    array: npt.NDArray[Any], column: InputColumn, float_type: np.dtype[Any]
) -> npt.NDArray[Any]:
    if column.kind == "string":
        text: npt.NDArray[Any] = np.vectorize(str, otypes=[object])(array)
        return text
    try:
        return array.astype(float_type)
    except (TypeError, ValueError):
        raise SampleMismatchError(
            f"column {column.name!r} must hold numbers, it holds {array.dtype}"
        ) from None


def _is_numeric(dtype: Any) -> bool:
    try:
        numpy_type = np.dtype(dtype)
    except TypeError:  # a pandas extension type: categories, strings
        return False
    return bool(np.issubdtype(numpy_type, np.number)) or numpy_type == np.dtype(bool)
