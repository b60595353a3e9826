"""Mergeable summaries of captured requests (pure): what a report needs of them
except the label join, small enough to read a day of a busy alias in seconds.

Capture writes ``<object>.summary.json`` next to each capture object
(``summary_key``). A summary is a JSON document::

    {"format": 1,
     "versions": {"2": {"requests": 120, "errors": 0, "rows": 130,
                        "latency": {"86": 3, "87": 117},
                        "features": {"float_input_0": {"fixed": {"29": 12, ...}}},
                        "predictions": {"values": {"0": 40, "1": 45, "2": 45}},
                        "hours": {"2026-12-02T03": 120}}}}

Every count is keyed by its bin as text, so ``merge`` is a sum of dictionaries
and summaries merge in any order and any grouping (an hour, a day, a week):

- latency: log-spaced bins, 20 per decade from 0.01 ms (``latency_bin``), so a
  percentile read from them (``latency_percentile``) is within 6 % of the true one;
- a numeric feature or a regressor's prediction: fixed bins on ``asinh(value)``,
  64 per unit (``fixed_bin``): no quantiles, so no pass over the data first;
  about 0.016 wide near 0 and 1.6 % of the value far from it. When the version's
  training baseline is known (``summarise(..., baselines=...)``), the baseline's
  own bins (``"baseline"``) instead, so drift is computed on exactly its bins;
- text (a category, a class): counts per value (``"values"``), at most
  ``MAX_VALUES`` distinct values and the rest under ``OTHER``.

Rows are counted per feature (a request of n rows adds n). Capture keeps only
answered requests, so ``errors`` counts records that carry an ``error``.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from chalicelib.evidence.baseline import Baseline, CategoricalSummary, NumericSummary

FORMAT = 1
SUMMARY_SUFFIX = ".summary.json"
LATENCY_LOWEST_MS = 0.01
LATENCY_BINS_PER_DECADE = 20
FIXED_BINS_PER_UNIT = 64
MAX_VALUES = 100
OTHER = "\x00other"
# The output a classifier's predicted class is read from (see chalicelib.predictor).
LABEL_OUTPUT = "label"
PREDICTION = "prediction"

Counts = dict[str, int]


def summary_key(capture_key: str) -> str:
    """Where the summary of the capture object ``capture_key`` is written."""
    return capture_key + SUMMARY_SUFFIX


def latency_bin(milliseconds: float) -> int:
    """The latency bin of ``milliseconds`` (bin 0 holds everything below 0.01 ms)."""
    if not milliseconds > LATENCY_LOWEST_MS:
        return 0
    decades = math.log10(milliseconds / LATENCY_LOWEST_MS)
    return 1 + int(decades * LATENCY_BINS_PER_DECADE)


def _latency_counts(latencies: Sequence[float]) -> Counts:
    """The latency sketch of many latencies at once (``latency_bin`` of each)."""
    milliseconds = np.asarray(latencies, dtype=np.float64)
    above = milliseconds > LATENCY_LOWEST_MS
    bins = np.zeros(milliseconds.size, dtype=np.int64)
    decades = np.log10(milliseconds[above] / LATENCY_LOWEST_MS)
    bins[above] = 1 + (decades * LATENCY_BINS_PER_DECADE).astype(np.int64)
    found, counts = np.unique(bins, return_counts=True)
    return {
        str(b): int(c) for b, c in zip(found.tolist(), counts.tolist(), strict=True)
    }


def latency_bin_value(index: int) -> float:
    """The geometric middle of latency bin ``index``, in milliseconds."""
    if index <= 0:
        return LATENCY_LOWEST_MS
    return LATENCY_LOWEST_MS * 10 ** ((index - 0.5) / LATENCY_BINS_PER_DECADE)


def latency_percentile(counts: Mapping[str, int], quantile: float) -> float | None:
    """The ``quantile`` (0 to 1) of a latency sketch, None when it is empty."""
    ordered = sorted((int(index), count) for index, count in counts.items())
    total = sum(count for _, count in ordered)
    if total == 0:
        return None
    rank = quantile * total
    seen = 0
    for index, count in ordered:
        seen += count
        if seen >= rank:
            return latency_bin_value(index)
    return latency_bin_value(ordered[-1][0])


def fixed_bin(value: float) -> int:
    """The fixed (quantile-free) bin of a number."""
    return math.floor(math.asinh(value) * FIXED_BINS_PER_UNIT)


def fixed_bin_value(index: int) -> float:
    """The middle of fixed bin ``index``."""
    return math.sinh((index + 0.5) / FIXED_BINS_PER_UNIT)


def record_features(record: Mapping[str, Any]) -> dict[str, list[Any]]:
    """A captured request's inputs as columns, named as batch files name them: an
    input of k > 1 columns becomes ``{name}_0`` ... ``{name}_{k-1}``."""
    columns: dict[str, list[Any]] = {}
    for name, value in (record.get("inputs") or {}).items():
        rows = value if isinstance(value, list) else [value]
        width = len(rows[0]) if rows and isinstance(rows[0], list) else 0
        if width > 1 and all(
            isinstance(row, list) and len(row) == width for row in rows
        ):
            # A table: transposed at C speed, the common case.
            for column_name, column in zip(
                _column_names(name, width), zip(*rows, strict=True), strict=True
            ):
                columns[column_name] = list(column)
            continue
        for row in rows:
            if isinstance(row, list) and len(row) > 1:
                for index, cell in enumerate(row):
                    columns.setdefault(f"{name}_{index}", []).append(cell)
            else:
                cell = row[0] if isinstance(row, list) and row else row
                columns.setdefault(name, []).append(cell)
    return columns


@functools.cache
def _column_names(name: str, width: int) -> tuple[str, ...]:
    return tuple(f"{name}_{index}" for index in range(width))


def record_predictions(record: Mapping[str, Any]) -> list[Any]:
    """A captured request's predictions, one per row: a classifier's ``label``
    output, else a single output's values; empty when neither is kept."""
    outputs = record.get("outputs") or {}
    if LABEL_OUTPUT in outputs:
        chosen = outputs[LABEL_OUTPUT]
    elif len(outputs) == 1:
        chosen = next(iter(outputs.values()))
    else:
        return []
    rows = chosen if isinstance(chosen, list) else [chosen]
    return [row[0] if isinstance(row, list) and len(row) == 1 else row for row in rows]


def summarise(
    records: Iterable[Mapping[str, Any]],
    baselines: Mapping[str, Baseline] | None = None,
) -> dict[str, Any]:
    """The summary of a group of captured records (``capture_record``'s form).

    ``baselines`` maps a version (text) to its training baseline: that version's
    features known to it are counted on its bins.
    """
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        grouped.setdefault(str(record.get("version")), []).append(record)
    return {
        "format": FORMAT,
        "versions": {
            version: _summarise_version(group, (baselines or {}).get(version))
            for version, group in grouped.items()
        },
    }


def _summarise_version(
    records: Sequence[Mapping[str, Any]], baseline: Baseline | None
) -> dict[str, Any]:
    """One version's records, counted column by column (numpy does the binning)."""
    entry = _empty_version()
    entry["requests"] = len(records)
    columns: dict[str, list[Any]] = {}
    predictions: list[Any] = []
    latencies: list[float] = []
    hours: Counter[str] = Counter()
    for record in records:
        if record.get("error"):
            entry["errors"] += 1
        latency = record.get("latency_ms")
        if isinstance(latency, (int, float)):
            latencies.append(latency)
        hours[str(record.get("time", ""))[:13]] += 1
        features = record_features(record)
        entry["rows"] += max(map(len, features.values()), default=0)
        for name, values in features.items():
            if name in columns:
                columns[name].extend(values)
            else:
                columns[name] = list(values)
        predictions.extend(record_predictions(record))
    entry["hours"] = {hour: count for hour, count in hours.items() if hour}
    entry["latency"] = _latency_counts(latencies)
    for name, values in columns.items():
        _count_values(
            entry["features"].setdefault(name, {}), values, _known(baseline, name)
        )
    if predictions:
        known = baseline.label if baseline is not None else None
        if known is None and all(
            isinstance(value, (int, str)) for value in predictions
        ):
            # Whole numbers out of a model are classes, not measurements.
            known = CategoricalSummary(PREDICTION, 0, 0, (), (), 0)
        _count_values(entry["predictions"], predictions, known)
    return entry


def merge(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """The summary of both groups of records; neither argument is changed."""
    return merge_into(merge_into({}, first), second)


def merge_into(total: dict[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """Add ``summary`` to ``total`` in place (the cheap way to merge thousands)
    and return ``total``; ``summary`` is not changed."""
    total["format"] = FORMAT
    versions = total.setdefault("versions", {})
    for version, entry in summary.get("versions", {}).items():
        versions[version] = _merged(versions.get(version), entry)
    return total


def _merged(into: Any, entry: Any) -> Any:
    if into is None:
        return _copied(entry)
    if isinstance(entry, Mapping):
        for key, value in entry.items():
            into[key] = _merged(into.get(key), value)
        return into
    return into + entry


def _copied(entry: Any) -> Any:
    if isinstance(entry, Mapping):
        return {key: _copied(value) for key, value in entry.items()}
    return entry


def _empty_version() -> dict[str, Any]:
    return {
        "requests": 0,
        "errors": 0,
        "rows": 0,
        "latency": {},
        "features": {},
        "predictions": {},
        "hours": {},
    }


def _known(
    baseline: Baseline | None, name: str
) -> NumericSummary | CategoricalSummary | None:
    if baseline is None:
        return None
    try:
        return baseline.feature(name)
    except KeyError:
        return None


def _count_values(
    bins: dict[str, Counts],
    values: Sequence[Any],
    known: NumericSummary | CategoricalSummary | None,
) -> None:
    present = [value for value in values if value is not None]
    numeric = _all_numbers(present)
    if isinstance(known, NumericSummary) and numeric:
        counts = known.bin_counts(np.asarray(present, dtype=np.float64))
        target = bins.setdefault("baseline", {})
        for index, count in enumerate(counts.tolist()):
            if count:
                _add(target, str(index), count)
        return
    if numeric and not isinstance(known, CategoricalSummary) and present:
        numbers = np.asarray(present, dtype=np.float64)
        finite = np.isfinite(numbers)
        indexes = np.floor(np.arcsinh(numbers[finite]) * FIXED_BINS_PER_UNIT)
        found, counts = np.unique(indexes.astype(np.int64), return_counts=True)
        target = bins.setdefault("fixed", {})
        for index, count in zip(found.tolist(), counts.tolist(), strict=True):
            _add(target, str(index), count)
        present = numbers[~finite].tolist()
    for value in present:
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and not isinstance(known, CategoricalSummary)
        ):
            _add(bins.setdefault("fixed", {}), str(fixed_bin(float(value))))
            continue
        target = bins.setdefault("values", {})
        text = str(value)
        if text not in target and len(target) >= MAX_VALUES:
            text = OTHER
        _add(target, text)


def _all_numbers(values: Sequence[Any]) -> bool:
    """Whether every value is a number (not text, not a bool, not a list): numpy
    tells in one pass, in C."""
    try:
        found = np.asarray(values)
    except ValueError:  # ragged lists
        return False
    return found.ndim == 1 and found.dtype.kind in "iuf"


def _add(counts: Counts, key: str, count: int = 1) -> None:
    counts[key] = counts.get(key, 0) + count
