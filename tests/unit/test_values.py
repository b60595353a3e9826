"""The value rules every decoder shares: CSV cells read as JSON values, and the
refusals only these rules make (the full tables for JSON values are in
test_payloads.py, for batch rows in test_batch_delimited.py and
test_batch_jsonlines.py). No I/O."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from chalicelib.values import ValueRefused, cell_value, to_array


@pytest.mark.parametrize(
    ("text", "datatype", "value"),
    [
        ("2", "INT8", 2),
        (" -007 ", "INT64", -7),
        ("18446744073709551615", "UINT64", 18446744073709551615),
        ("2.0", "INT8", 2.0),
        ("1e3", "FP32", 1000.0),
        ("+.5", "FP32", 0.5),
        ("TRUE", "BOOL", True),
        (" false ", "BOOL", False),
        ("true", "FP32", True),
        ("1", "BOOL", 1),
        ("1_000", "FP32", "1_000"),
        ("0x10", "INT8", "0x10"),
        ("\u0661", "INT8", "\u0661"),
        ("", "FP32", ""),
        ("1", "BYTES", "1"),
        ("true", "BYTES", "true"),
    ],
)
def test_a_cell_reads_as_the_json_value_it_spells(
    text: str, datatype: str, value: Any
) -> None:
    read = cell_value(text, datatype)
    assert read == value and type(read) is type(value)


def test_a_cell_of_more_digits_than_any_datatype_holds_is_refused_unread() -> None:
    with pytest.raises(ValueRefused) as caught:
        cell_value("-" + "9" * 5000, "INT64")
    assert caught.value.problem == (
        "out of range for INT64 (-9223372036854775808 to 9223372036854775807)"
    )
    assert cell_value("0" * 5000 + "7", "INT8") == 7


def test_nan_and_infinity_cells_read_as_floats() -> None:
    values = [cell_value(text, "FP32") for text in ("nan", "-Infinity", "1e400")]
    assert np.isnan(values[0]) and values[1:] == [-np.inf, np.inf]


@pytest.mark.parametrize(
    ("values", "message", "position"),
    [
        ([2.5, True], "true is not a number, model expects FP32", (1,)),
        (
            [[2.5, 3.0], [False, 7.0]],
            "false is not a number, model expects FP32",
            (1, 0),
        ),
        (
            # More values than are looked at one by one: the array path.
            [[2.5, 3.0]] * 30 + [[7.0, False]] + [[1.0, 0.0]] * 9,
            "false is not a number, model expects FP32",
            (30, 1),
        ),
        ([0, 1, 1.0, 0.0], None, None),
    ],
)
def test_booleans_among_numbers_are_refused(
    values: list[Any], message: str | None, position: tuple[int, ...] | None
) -> None:
    if message is None:
        np.testing.assert_array_equal(to_array(values, "FP32", False), [0, 1, 1, 0])
        return
    with pytest.raises(ValueRefused) as caught:
        to_array(values, "FP32", False)
    assert str(caught.value) == message and caught.value.position == position
