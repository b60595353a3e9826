"""A model's columns in a batch file (pure): the features a row feeds the model's
inputs, and the prediction fields appended to it, from the version's signature."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.datatypes import V2_TO_NUMPY
from chalicelib.errors import BatchFileError
from chalicelib.registry.manifest import Manifest, classifier_outputs
from chalicelib.values import accepts_non_finite


@dataclass(frozen=True)
class Feature:
    """One model input as a row feeds it: ``size`` values, shaped ``shape``;
    ``allow_non_finite`` when the model takes NaN and Infinity."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    allow_non_finite: bool = False

    @functools.cached_property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return V2_TO_NUMPY[self.datatype]

    def columns(self) -> list[str]:
        """CSV column names that feed it by name: ``x`` or ``x_0``, ``x_1``..."""
        if self.size == 1:
            return [self.name]
        return [f"{self.name}_{index}" for index in range(self.size)]


def features_of(manifest: Manifest) -> tuple[Feature, ...]:
    """How rows feed the model's inputs; BatchFileError for inputs rows cannot feed
    (a fixed batch size, dynamic feature dimensions, an unsupported datatype)."""
    features = []
    allow_non_finite = accepts_non_finite(manifest)
    for spec in manifest.inputs:
        if not spec.shape or spec.shape[0] >= 0:
            raise BatchFileError(
                f"input {spec.name!r} has shape {list(spec.shape)}: batch files need "
                "a dynamic first (row) dimension"
            )
        if any(dimension < 0 for dimension in spec.shape[1:]):
            raise BatchFileError(
                f"input {spec.name!r} has shape {list(spec.shape)}: batch files need "
                "a fixed number of values per row"
            )
        if spec.datatype not in V2_TO_NUMPY:
            raise BatchFileError(
                f"input {spec.name!r} has datatype {spec.datatype}, which batch "
                "files cannot carry"
            )
        features.append(
            Feature(spec.name, spec.datatype, tuple(spec.shape[1:]), allow_non_finite)
        )
    return tuple(features)


@dataclass(frozen=True)
class Field:
    """One prediction field appended to each row.

    ``key`` names it in a JSON object; ``columns`` are its CSV columns, one per
    value. ``labels`` maps class indices to names for a classifier's label;
    ``keys`` name a classifier's probabilities in a JSON object, as REST does.
    """

    key: str
    output: str
    columns: tuple[str, ...]
    as_list: bool
    is_label: bool = False
    from_argmax: bool = False
    labels: tuple[str, ...] | None = None
    keys: tuple[str, ...] | None = None

    def values(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The field's values, one row per input row and one column per CSV column."""
        data = outputs[self.output]
        if self.from_argmax:
            return np.argmax(data, axis=1).reshape(-1, 1)
        return data.reshape(data.shape[0], -1)


def output_fields(
    manifest: Manifest, widths: Mapping[str, int] | None = None
) -> tuple[Field, ...]:
    """The prediction fields for a model: label and one probability per class for a
    classifier, else every tensor output (one column per value).

    ``widths`` gives the values per row of outputs whose signature leaves it open
    (taken from a first prediction); unknown widths count as 1.
    """
    widths = widths or {}

    def width(name: str) -> int:
        spec = manifest.signature.output(name)
        assert spec is not None
        fixed = spec.shape[1:]
        if all(dimension >= 0 for dimension in fixed):
            return math.prod(fixed)
        return widths.get(name, 1)

    labels = manifest.labels
    classifier = classifier_outputs(manifest.signature)
    if classifier is not None:
        probabilities = classifier.probabilities.name
        classes = width(probabilities)
        names = [
            labels[index] if labels and index < len(labels) else str(index)
            for index in range(classes)
        ]
        label_source = classifier.label.name if classifier.label else probabilities
        return (
            Field(
                key="label",
                output=label_source,
                columns=("label",),
                as_list=False,
                is_label=True,
                from_argmax=classifier.label is None,
                labels=labels,
            ),
            Field(
                key="probabilities",
                output=probabilities,
                columns=tuple(f"probability_{name}" for name in names),
                as_list=True,
                keys=labels if labels and len(labels) == classes else None,
            ),
        )
    fields = []
    for spec in manifest.outputs:
        if spec.datatype not in V2_TO_NUMPY or not spec.shape:
            continue
        count = width(spec.name)
        columns = (
            (spec.name,)
            if count == 1
            else tuple(f"{spec.name}_{index}" for index in range(count))
        )
        fields.append(
            Field(key=spec.name, output=spec.name, columns=columns, as_list=count > 1)
        )
    if not fields:
        raise BatchFileError(
            "the model has no tensor output with a row dimension to write"
        )
    return tuple(fields)


def open_widths(manifest: Manifest) -> list[str]:
    """Outputs whose values per row are only known from a prediction."""
    return [
        spec.name
        for spec in manifest.outputs
        if spec.shape and any(dimension < 0 for dimension in spec.shape[1:])
    ]
