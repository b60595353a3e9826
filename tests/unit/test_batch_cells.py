"""Prediction cells: floats like printf, integers in decimal, labels by name
(pure)."""

from __future__ import annotations

import numpy as np

from chalicelib.batch.tables.cells import (
    format_cells,
    format_floats,
    format_integers,
    format_labels,
)
from chalicelib.batch.tables.formats import CSV, JSONL


def cells(matrix: np.ndarray) -> list[str]:
    return [bytes(row[row != 0]).decode() for row in matrix]


def test_fp32_floats_are_written_exactly_like_printf() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.random(2000, dtype=np.float32),
            (rng.standard_normal(2000) * 10.0 ** rng.integers(-8, 12, 2000)).astype(
                np.float32
            ),
            np.array(
                [0.0, -0.0, 1.0, -1e-9, 0.5, 2.5e-7, 8.9e12, 123456.5], np.float32
            ),
        ]
    )
    assert cells(format_floats(values, CSV)) == [f"{float(v):.6f}" for v in values]


def test_fp64_huge_and_non_finite_floats_take_the_exact_path() -> None:
    values = np.array([0.4999995, 1e20, -2.5], np.float64)
    assert cells(format_floats(values, CSV)) == [
        "0.499999",
        "100000000000000000000.000000",
        "-2.500000",
    ]
    special = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    assert cells(format_floats(special, CSV)) == [
        "NaN",
        "inf",
        "-inf",
        "1.000000",
    ]
    assert cells(format_floats(special, JSONL)) == [
        "null",
        "null",
        "null",
        "1.000000",
    ]


def test_integers_are_written_in_decimal() -> None:
    values = np.array(
        [
            0,
            7,
            -7,
            10_000,
            -123_456_789_012,
            np.iinfo(np.int64).max,
            np.iinfo(np.int64).min,
        ]
    )
    assert cells(format_integers(values)) == [str(int(v)) for v in values]
    big = np.array([0, np.iinfo(np.uint64).max], np.uint64)
    assert cells(format_integers(big)) == ["0", str(np.iinfo(np.uint64).max)]


def test_labels_are_names_when_known_and_numbers_otherwise() -> None:
    names = ("setosa", 'a "quoted", name', "multi\nline")
    indices = np.array([2, 0, 1], np.int64)
    assert cells(format_labels(indices, names, CSV)) == [
        "multi line",
        "setosa",
        '"a ""quoted"", name"',
    ]
    assert cells(format_labels(indices, names, JSONL)) == [
        '"multi line"',
        '"setosa"',
        '"a \\"quoted\\", name"',
    ]
    assert cells(format_labels(np.array([3, 0]), names, CSV)) == ["3", "0"]
    assert cells(format_labels(indices, None, CSV)) == ["2", "0", "1"]
    strings = np.array(["cat", "dog"], dtype=object)
    assert cells(format_cells(strings, JSONL)) == ['"cat"', '"dog"']
