"""The parity check's comparisons and report (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from turnout.publish.parity import (
    CheckedRows,
    Tolerance,
    check_rows,
    compare_classifier,
    compare_regressor,
    subset,
)


def all_rows(count: int) -> CheckedRows:
    return CheckedRows(np.arange(count, dtype=np.int64), count, None)


def test_probabilities_within_the_tolerance_and_agreeing_labels_pass() -> None:
    original = np.array([[0.9, 0.1], [0.2, 0.8]])
    converted = np.array([[0.90005, 0.09995], [0.2, 0.8]])
    report = compare_classifier(
        ["a", "b"],
        original,
        ["a", "b"],
        converted,
        checked=all_rows(2),
    )
    assert report.passed
    assert report.outputs[1].largest_difference == pytest.approx(5e-5, rel=1e-9)
    assert report.text().splitlines()[:3] == [
        "parity PASSED: classifier, all 2 rows of the sample",
        "  label: agrees on every row",
        "  probabilities: largest difference 5e-05 (row 0), allowed 0.0001: ok",
    ]


def test_a_differing_label_fails_and_is_listed_with_both_answers() -> None:
    probabilities = np.array([[0.5, 0.5], [0.1, 0.9], [0.7, 0.3]])
    report = compare_classifier(
        ["a", "b", "a"],
        probabilities,
        ["b", "b", "a"],
        probabilities,
        checked=all_rows(3),
    )
    assert not report.passed and report.label_mismatch_count == 1
    assert "  labels differ on 1 rows (row: original -> onnx):" in report.text()
    assert "    row 0: 'a' -> 'b'" in report.text()


def test_a_probability_too_far_fails_unless_a_tolerance_is_accepted() -> None:
    original = np.array([[0.88, 0.12], [0.5, 0.5]])
    converted = np.array([[1.0, 0.0], [0.5, 0.5]])
    refused = compare_classifier(
        [0, 1], original, [0, 1], converted, checked=all_rows(2)
    )
    assert not refused.passed
    assert refused.outputs[1].row == 0 and not refused.outputs[1].passed
    assert [row.row for row in refused.worst_rows] == [0]
    accepted = compare_classifier(
        [0, 1],
        original,
        [0, 1],
        converted,
        checked=all_rows(2),
        tolerance=Tolerance(accepted=0.15),
    )
    assert accepted.passed and accepted.outputs[1].allowed == "0.15"


def test_labels_must_agree_even_with_an_accepted_tolerance() -> None:
    probabilities = np.array([[0.5, 0.5]])
    report = compare_classifier(
        [0],
        probabilities,
        [1],
        probabilities,
        checked=all_rows(1),
        tolerance=Tolerance(accepted=1.0),
    )
    assert not report.passed


def test_a_regressor_has_a_relative_and_an_absolute_tolerance() -> None:
    original = np.array([1000.0, 0.0])
    within = compare_regressor(
        original, np.array([1000.09, 0.0009]), output="y", checked=all_rows(2)
    )
    assert within.passed
    beyond = compare_regressor(
        original, np.array([1000.0, 0.002]), output="y", checked=all_rows(2)
    )
    assert not beyond.passed
    assert beyond.outputs[0].row == 1
    assert beyond.outputs[0].allowed == "0.001 + 0.0001*|value|"


def test_a_large_sample_is_checked_on_a_stated_seeded_subset() -> None:
    rows, seed = check_rows(50, max_rows=10, seed=7)
    assert seed == 7 and len(rows) == 10 and list(rows) == sorted(set(rows))
    assert list(check_rows(50, max_rows=10, seed=7)[0]) == list(rows)
    assert check_rows(10, max_rows=10)[1] is None
    sample = np.arange(100.0).reshape(50, 2)
    chosen, checked = subset(sample, max_rows=10, seed=7)
    assert (chosen[:, 0] == rows * 2).all()
    report = compare_regressor(chosen[:, 0], chosen[:, 0], output="y", checked=checked)
    assert report.text().startswith(
        "parity PASSED: regressor, 10 of 50 rows (a random subset, seed 7)"
    )


def test_the_report_is_json_for_the_manifest() -> None:
    report = compare_classifier(
        np.array([1]),
        np.array([[0.1, 0.9]]),
        np.array([1]),
        np.array([[0.1, 0.9]]),
        checked=all_rows(1),
    )
    document = report.to_json()
    assert document["passed"] is True and document["rows_checked"] == 1
    assert document["tolerance"] == {
        "probability": 0.0001,
        "regression_rtol": 0.0001,
        "regression_atol": 0.001,
        "accepted": None,
    }
