"""The ``{"instances": [...]}`` protocol, for people with curl: rows decoded
against a version's signature, one prediction per row encoded (pure).

What JSON values are read and written: :mod:`chalicelib.protocols.common`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from chalicelib.errors import InvalidInputError, TooManyRowsError
from chalicelib.protocols.common import json_values, spec_names
from chalicelib.registry.manifest import (
    Manifest,
    Signature,
    TensorSpec,
    classifier_outputs,
)
from chalicelib.values import (
    MAX_NESTING,
    CheckedInputs,
    ValueRefused,
    accepts_non_finite,
    to_array,
)


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
            "a list, but the model takes several inputs "
            f"({spec_names(signature.inputs)}):"
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
                f"{spec_names(signature.inputs)}",
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


class InstancesCodec:
    """The instances protocol's decoder and encoder (a Codec of the parsed JSON
    document)."""

    def decode(
        self, request: Any, manifest: Manifest, *, max_rows: int
    ) -> CheckedInputs:
        return decode_instances(request, manifest, max_rows=max_rows)

    def outputs(self, request: Any) -> None:
        return None

    def encode(
        self,
        request: Any,
        outputs: Mapping[str, np.ndarray],
        manifest: Manifest,
        alias: str | None,
    ) -> dict[str, Any]:
        return {
            "predictions": encode_predictions(manifest, outputs),
            "model": manifest.name,
            "version": manifest.version,
            "alias": alias,
        }


CODEC = InstancesCodec()
