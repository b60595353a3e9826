"""The training baseline: per-feature statistics of a training sample (pure).

A baseline is what drift is measured against, stored with a version and as
immutable as it. It is a JSON document::

    {"format": 1, "rows": 150,
     "features": [{"name": "x", "kind": "numeric", "count": 148, "missing": 2,
                   "mean": 5.8, "std": 0.83, "min": 4.3, "max": 7.9,
                   "edges": [4.3, 5.0, ...], "counts": [16, 14, ...]},
                  {"name": "colour", "kind": "categorical", "count": 150,
                   "missing": 0, "values": ["red", ...], "counts": [70, ...],
                   "other": 3}],
     "label": {"name": "label", "kind": "categorical", ...} or null}

Numbers get quantile bins (10 by default; tied edges are merged, so a column
with few distinct values has fewer bins). A bin is ``[edge_i, edge_i+1)``, the
last one closed, and the two outer bins are open-ended, so any later value falls
in exactly one bin (``NumericSummary.bin_counts``). Categories keep their most
frequent values (20 by default) and count the rest as "other"; a category is
compared by its ``str()``. The label is summarised like a feature: its class
shares for a classifier (categorical), its bins for a regressor (numeric).

Size: 30 numeric features of 10 bins each make about 15 KB of JSON (numbers
written in full, so edges survive a round trip exactly), 30 categorical features
of 20 values about 14 KB; ``tests/unit/test_evidence_baseline.py`` holds both
under 20 KB.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from chalicelib.errors import TurnoutError

FORMAT = 1
DEFAULT_BINS = 10
DEFAULT_TOP_VALUES = 20

Kind = Literal["numeric", "categorical"]
IntArray = npt.NDArray[np.int64]
# A column: an array, or a list that may hold None for a missing value.
Column = npt.ArrayLike | Sequence[Any]


class InvalidBaselineError(TurnoutError):
    """A baseline document (or a sample to build one from) that breaks a rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid baseline: {reason}")


@dataclass(frozen=True)
class NumericSummary:
    """A numeric column: moments, range and quantile bins with the sample's counts."""

    name: str
    count: int
    missing: int
    mean: float | None
    std: float | None
    minimum: float | None
    maximum: float | None
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    kind: Literal["numeric"] = "numeric"

    def bin_counts(self, values: Column) -> IntArray:
        """How many of ``values`` (NaN ignored) fall in each of this column's bins.

        Raises InvalidBaselineError when a value is not a number.
        """
        numbers = _as_numbers(self.name, values)
        numbers = numbers[~np.isnan(numbers)]
        if not self.counts:
            return np.zeros(0, dtype=np.int64)
        bins = np.searchsorted(np.asarray(self.edges[1:-1]), numbers, side="right")
        return np.bincount(bins, minlength=len(self.counts)).astype(np.int64)


@dataclass(frozen=True)
class CategoricalSummary:
    """A categorical column: its most frequent values and an "other" bucket."""

    name: str
    count: int
    missing: int
    values: tuple[str, ...]
    counts: tuple[int, ...]
    other: int

    kind: Literal["categorical"] = "categorical"

    def bucket_counts(self, values: Column) -> IntArray:
        """Counts of ``values`` per known value, then "other" (missing ignored)."""
        position = {value: index for index, value in enumerate(self.values)}
        counts = np.zeros(len(self.values) + 1, dtype=np.int64)
        for value, count in _category_counts(values).items():
            counts[position.get(value, len(self.values))] += count
        return counts


FeatureSummary = NumericSummary | CategoricalSummary


@dataclass(frozen=True)
class Baseline:
    """The statistics of one training sample: one summary per feature, the label's."""

    rows: int
    features: tuple[FeatureSummary, ...]
    label: FeatureSummary | None = None

    def feature(self, name: str) -> FeatureSummary:
        """The summary of feature ``name``; KeyError when there is none."""
        for summary in self.features:
            if summary.name == name:
                return summary
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """The baseline as a JSON-able document (format 1)."""
        return {
            "format": FORMAT,
            "rows": self.rows,
            "features": [_summary_to_json(summary) for summary in self.features],
            "label": None if self.label is None else _summary_to_json(self.label),
        }

    @classmethod
    def from_json(cls, document: object) -> Baseline:
        """Read a document written by ``to_json``.

        Raises InvalidBaselineError naming the first rule it breaks (an unknown
        format, a missing or mistyped field, counts that do not add up).
        """
        fields = _require_mapping(document, "the document")
        if fields.get("format") != FORMAT:
            raise InvalidBaselineError(
                f"format {fields.get('format')!r} is not supported, expected {FORMAT}"
            )
        rows = _require_count(fields, "rows", "the document")
        features = fields.get("features")
        if not isinstance(features, list):
            raise InvalidBaselineError("'features' must be a list")
        summaries = tuple(
            _summary_from_json(item, f"features[{index}]", rows)
            for index, item in enumerate(features)
        )
        names = [summary.name for summary in summaries]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise InvalidBaselineError(f"feature {duplicated[0]!r} appears twice")
        label = fields.get("label")
        return cls(
            rows=rows,
            features=summaries,
            label=None if label is None else _summary_from_json(label, "label", rows),
        )


def compute_baseline(
    sample: npt.NDArray[Any] | Sequence[Column],
    names: Sequence[str],
    kinds: Sequence[Kind],
    labels: Column | None = None,
    *,
    label_name: str = "label",
    label_kind: Kind = "categorical",
    bins: int = DEFAULT_BINS,
    top_values: int = DEFAULT_TOP_VALUES,
) -> Baseline:
    """Summarise a training sample.

    ``sample`` is a 2-D array (rows by features) or one array per feature;
    ``names`` and ``kinds`` give each feature's name and kind. Missing values are
    NaN in numeric columns, None or NaN in categorical ones. Raises
    InvalidBaselineError when the shapes disagree or a numeric column holds text.
    """
    columns = _columns(sample)
    if not len(columns) == len(names) == len(kinds):
        raise InvalidBaselineError(
            f"{len(columns)} columns, {len(names)} names and {len(kinds)} kinds"
        )
    lengths = {len(column) for column in columns}
    if len(lengths) > 1:
        raise InvalidBaselineError(f"columns have different lengths: {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    if bins < 1 or top_values < 1:
        raise InvalidBaselineError("bins and top values must be at least 1")
    features = tuple(
        summarise_column(column, name, kind, bins=bins, top_values=top_values)
        for column, name, kind in zip(columns, names, kinds, strict=True)
    )
    label = None
    if labels is not None:
        label_column = np.asarray(labels)
        if columns and len(label_column) != rows:
            raise InvalidBaselineError(f"{len(label_column)} labels for {rows} rows")
        rows = len(label_column)
        label = summarise_column(label_column, label_name, label_kind, bins, top_values)
    return Baseline(rows=rows, features=features, label=label)


def summarise_column(
    values: Column,
    name: str,
    kind: Kind,
    bins: int = DEFAULT_BINS,
    top_values: int = DEFAULT_TOP_VALUES,
) -> FeatureSummary:
    """The summary of one column (see ``compute_baseline``)."""
    if kind == "categorical":
        counter = _category_counts(values)
        common = counter.most_common(top_values)
        total = sum(counter.values())
        return CategoricalSummary(
            name=name,
            count=total,
            missing=np.asarray(values, dtype=object).size - total,
            values=tuple(value for value, _ in common),
            counts=tuple(count for _, count in common),
            other=total - sum(count for _, count in common),
        )
    if kind != "numeric":
        raise InvalidBaselineError(f"feature {name!r} has unknown kind {kind!r}")
    numbers = _as_numbers(name, values)
    present = numbers[~np.isnan(numbers)]
    if present.size == 0:
        return NumericSummary(
            name, 0, int(numbers.size), None, None, None, None, (), ()
        )
    edges = np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)))
    if edges.size == 1:
        edges = np.repeat(edges, 2)
    partial = NumericSummary(
        name=name,
        count=int(present.size),
        missing=int(numbers.size - present.size),
        mean=float(np.mean(present)),
        std=float(np.std(present, ddof=1)) if present.size > 1 else 0.0,
        minimum=float(present.min()),
        maximum=float(present.max()),
        edges=tuple(float(edge) for edge in edges),
        counts=(0,) * (edges.size - 1),
    )
    counts = tuple(int(count) for count in partial.bin_counts(present))
    return replace(partial, counts=counts)


def _columns(sample: npt.NDArray[Any] | Sequence[Column]) -> list[Any]:
    if isinstance(sample, np.ndarray):
        if sample.ndim != 2:
            raise InvalidBaselineError(
                f"a sample array must be 2-D, not {sample.ndim}-D"
            )
        return list(sample.T)
    return [np.asarray(column) for column in sample]


def _as_numbers(name: str, values: Column) -> npt.NDArray[np.float64]:
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        return array.astype(np.float64).ravel()
    items = array.astype(object).ravel().tolist()
    try:
        return np.array([math.nan if item is None else item for item in items], float)
    except (TypeError, ValueError) as error:
        raise InvalidBaselineError(f"feature {name!r} is numeric: {error}") from None


def _category_counts(values: Column) -> Counter[str]:
    return Counter(
        str(value)
        for value in np.asarray(values, dtype=object).ravel().tolist()
        if value is not None and not (isinstance(value, float) and math.isnan(value))
    )


def _summary_to_json(summary: FeatureSummary) -> dict[str, Any]:
    common = {"name": summary.name, "kind": summary.kind}
    if isinstance(summary, CategoricalSummary):
        return {
            **common,
            "count": summary.count,
            "missing": summary.missing,
            "values": list(summary.values),
            "counts": list(summary.counts),
            "other": summary.other,
        }
    return {
        **common,
        "count": summary.count,
        "missing": summary.missing,
        "mean": summary.mean,
        "std": summary.std,
        "min": summary.minimum,
        "max": summary.maximum,
        "edges": list(summary.edges),
        "counts": list(summary.counts),
    }


def _summary_from_json(item: object, where: str, rows: int) -> FeatureSummary:
    fields = _require_mapping(item, where)
    name = fields.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidBaselineError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name!r})"
    count = _require_count(fields, "count", where)
    missing = _require_count(fields, "missing", where)
    if count + missing != rows:
        raise InvalidBaselineError(
            f"{where}: count {count} and missing {missing} do not add up to {rows} rows"
        )
    counts = _require_list(fields, "counts", where, int)
    kind = fields.get("kind")
    if kind == "categorical":
        values = _require_list(fields, "values", where, str)
        other = _require_count(fields, "other", where)
        if len(values) != len(counts) or len(set(values)) != len(values):
            raise InvalidBaselineError(
                f"{where}: 'values' must be distinct, one per count"
            )
        if sum(counts) + other != count:
            raise InvalidBaselineError(
                f"{where}: counts and other do not add up to count"
            )
        return CategoricalSummary(
            name, count, missing, tuple(values), tuple(counts), other
        )
    if kind != "numeric":
        raise InvalidBaselineError(f"{where}: unknown kind {kind!r}")
    edges = _require_list(fields, "edges", where, float)
    if len(edges) != (len(counts) + 1 if counts else 0) or sum(counts) != count:
        raise InvalidBaselineError(f"{where}: edges and counts do not match count")
    if any(later <= earlier for earlier, later in itertools.pairwise(edges)) and (
        len(edges) != 2 or edges[0] != edges[1]
    ):
        raise InvalidBaselineError(f"{where}: edges must increase")
    mean, std, minimum, maximum = (
        _optional_number(fields, key, where) for key in ("mean", "std", "min", "max")
    )
    if any(
        (moment is None) != (count == 0) for moment in (mean, std, minimum, maximum)
    ):
        raise InvalidBaselineError(
            f"{where}: mean, std, min and max are null exactly when count is 0"
        )
    return NumericSummary(
        name, count, missing, mean, std, minimum, maximum, tuple(edges), tuple(counts)
    )


def _require_mapping(item: object, where: str) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise InvalidBaselineError(f"{where} must be an object")
    return item


def _require_count(fields: Mapping[str, Any], key: str, where: str) -> int:
    value = fields.get(key)
    if type(value) is not int or value < 0:
        raise InvalidBaselineError(f"{where}: {key!r} must be a non-negative integer")
    return value


def _require_list(
    fields: Mapping[str, Any], key: str, where: str, item_type: type
) -> list[Any]:
    items = fields.get(key)

    def fits(item: object) -> bool:
        if item_type is float:
            return type(item) in (int, float) and math.isfinite(item)  # type: ignore[arg-type]
        if item_type is int:
            return type(item) is int and item >= 0
        return isinstance(item, item_type)

    if not isinstance(items, list) or not all(fits(item) for item in items):
        raise InvalidBaselineError(
            f"{where}: {key!r} must be a list of {item_type.__name__}"
        )
    return [float(item) for item in items] if item_type is float else items


def _optional_number(fields: Mapping[str, Any], key: str, where: str) -> float | None:
    value = fields.get(key)
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise InvalidBaselineError(f"{where}: {key!r} must be a finite number or null")
    return float(value)
