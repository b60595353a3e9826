"""Mergeable capture summaries: counts, the latency sketch, fixed and baseline bins."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from chalicelib.capture_summary import (
    fixed_bin,
    fixed_bin_value,
    latency_percentile,
    merge,
    record_features,
    summarise,
    summary_key,
)
from chalicelib.evidence.baseline import compute_baseline


def record(
    version: int, latency: float, rows: list[list[float]], labels: list[int]
) -> dict[str, Any]:
    return {
        "request_id": "r",
        "time": "2026-01-05T10:15:00.000+00:00",
        "version": version,
        "latency_ms": latency,
        "inputs": {"float_input": rows},
        "outputs": {"label": labels, "probabilities": [[1, 0, 0]] * len(rows)},
    }


def test_a_summary_counts_requests_rows_hours_and_the_prediction_mix() -> None:
    summary = summarise(
        [
            record(1, 4.0, [[1.0, 2.0], [3.0, 4.0]], [0, 1]),
            record(1, 6.0, [[1.0, 2.0]], [1]) | {"error": "boom"},
            record(2, 9.0, [[0.5, 0.5]], [2]),
        ]
    )
    first = summary["versions"]["1"]
    assert (first["requests"], first["errors"], first["rows"]) == (2, 1, 3)
    assert first["hours"] == {"2026-01-05T10": 2}
    assert first["predictions"] == {"values": {"0": 1, "1": 2}}
    assert first["features"]["float_input_0"] == {
        "fixed": {str(fixed_bin(1.0)): 2, str(fixed_bin(3.0)): 1}
    }
    assert summary["versions"]["2"]["predictions"] == {"values": {"2": 1}}


def test_merging_is_the_summary_of_all_records_in_any_grouping() -> None:
    records = [
        record(1 + index % 2, 1.0 + index, [[index / 3, 1.0]], [index % 3])
        for index in range(12)
    ]
    whole = summarise(records)
    parts = [summarise(records[start : start + 4]) for start in (0, 4, 8)]
    assert merge(merge(parts[0], parts[1]), parts[2]) == whole
    assert merge(parts[0], merge(parts[1], parts[2])) == whole
    assert parts[0] == summarise(records[:4])  # the arguments are not changed


def test_latency_percentiles_from_the_sketch_are_within_six_percent() -> None:
    latencies = np.random.default_rng(7).lognormal(3, 1, 5000)
    summary = summarise(record(1, float(value), [], []) for value in latencies)
    sketch = summary["versions"]["1"]["latency"]
    for quantile in (0.5, 0.95, 0.99):
        exact = float(np.quantile(latencies, quantile))
        assert latency_percentile(sketch, quantile) == pytest.approx(exact, rel=0.06)
    assert latency_percentile({}, 0.5) is None


def test_a_fixed_bin_holds_its_middle() -> None:
    for value in (-1000.0, -1.0, 0.0, 0.01, 5.1, 1e6):
        index = fixed_bin(value)
        assert fixed_bin(fixed_bin_value(index)) == index
        assert math.isclose(fixed_bin_value(index), value, rel_tol=0.02, abs_tol=0.02)


def test_with_a_baseline_features_are_counted_on_its_bins() -> None:
    baseline = compute_baseline(
        np.array([[float(index), 1.0] for index in range(100)]),
        ["float_input_0", "float_input_1"],
        ["numeric", "numeric"],
        labels=[index % 3 for index in range(100)],
    )
    summary = summarise(
        [record(1, 1.0, [[5.0, 1.0], [95.0, 1.0]], [0, 1])], {"1": baseline}
    )
    features = summary["versions"]["1"]["features"]
    counts = baseline.feature("float_input_0").bin_counts([5.0, 95.0])  # type: ignore[union-attr]
    assert features["float_input_0"] == {
        "baseline": {str(i): int(c) for i, c in enumerate(counts) if c}
    }
    assert summary["versions"]["1"]["predictions"] == {"values": {"0": 1, "1": 1}}


def test_inputs_become_columns_named_as_batch_files_name_them() -> None:
    assert record_features(
        {"inputs": {"float_input": [[1, 2], [3, 4]], "colour": ["red", "blue"]}}
    ) == {
        "float_input_0": [1, 3],
        "float_input_1": [2, 4],
        "colour": ["red", "blue"],
    }


def test_the_summary_is_written_next_to_its_capture_object() -> None:
    assert summary_key("capture/iris/prod/x.jsonl.gz") == (
        "capture/iris/prod/x.jsonl.gz.summary.json"
    )
