"""What each datatype accepts (pure): the one set of value rules that the V2 and
``instances`` decoders and both batch formats apply.

- Floats (FP16, FP32, FP64) take numbers. A finite number too large for the
  datatype (``1e39`` as FP32, ``70000`` as FP16, an integer beyond float64) is
  refused. NaN and Infinity (the JSON tokens ``NaN``, ``Infinity``,
  ``-Infinity``; the CSV cells ``nan``, ``inf``, ``infinity``) are refused unless
  the manifest has the tag ``turnout.non_finite=allow``. A float literal beyond
  float64 (``1e400``) reads as Infinity, as every JSON and CSV reader reads it.
- Integers (INT8 to UINT64) take integral numbers (``2`` or ``2.0``) inside
  their range, never NaN or Infinity.
- BOOL takes booleans only: JSON ``true``/``false``, CSV ``true``/``false`` in any
  case. Numbers are not booleans, and a numeric input refuses booleans (numpy
  reads ``[true, 2.5]`` as ``[1.0, 2.5]``: values of 0 or 1 are looked at as sent).
- BYTES takes strings (in CSV, any cell's text).

CSV cells are first read as the JSON value they spell (:func:`cell_value`), then
go through the same rules as JSON values (:func:`to_array`), so a file and a
request agree on every value.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from chalicelib.datatypes import INTEGER_TYPES, V2_TO_NUMPY
from chalicelib.registry.manifest import Manifest

NON_FINITE_TAG = "turnout.non_finite"
# The largest finite value of each float datatype.
_FLOAT_LIMITS = {
    "FP16": float(np.finfo(np.float16).max),
    "FP32": float(np.finfo(np.float32).max),
    "FP64": float(np.finfo(np.float64).max),
}
# Past 2**53 float64 skips integers: such integer values are compared as sent.
_EXACT_FLOAT = 2.0**53
# Integers of more significant digits than this exceed every datatype (float64's
# largest finite value has 309), and Python refuses to read those over 4300.
_MAX_DIGITS = 400
# An integer (its sign, and its digits past leading zeros), else a float in the
# syntax numpy's CSV reader takes (no "1_000", no "0x10"): one match per cell.
_NUMBER = re.compile(
    r"\s*(?:([+-]?)0*([0-9]+)"
    r"|([+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)))"
    r"\s*",
    re.IGNORECASE,
)
_BOOLEANS = {"true": True, "false": False}
# Deeper than this, nested lists are no tensor numpy can hold.
MAX_NESTING = 64
# Why a JSON parser refused a document that is otherwise JSON: Python reads no
# integer literal over its digit limit (the limit's own message names internals).
LONG_NUMBER = (
    f"a number has more than {sys.get_int_max_str_digits()} digits, more than any "
    "datatype holds"
)


class CheckedInputs(dict[str, np.ndarray]):
    """Input arrays that a decoder built by these rules against a version's
    signature: every input present, of its dtype and shape, every value allowed.
    ``Predictor.run`` does not check them again; a run on another version (a
    shadow) passes a plain dict, which it does check."""


class ValueRefused(ValueError):
    """A value its datatype does not take: ``shown`` is the value as the client
    wrote it, ``problem`` what is wrong (``out of range for FP32``), ``position``
    its index in the nested values (None when the values do not nest evenly)."""

    def __init__(
        self, shown: str, problem: str, position: tuple[int, ...] | None = None
    ) -> None:
        super().__init__(f"{shown} is {problem}" if shown else problem)
        self.shown = shown
        self.problem = problem
        self.position = position


def accepts_non_finite(manifest: Manifest) -> bool:
    """True when the model takes NaN and Infinity in its float inputs."""
    return manifest.tags.get(NON_FINITE_TAG, "").lower() == "allow"


def show(value: Any) -> str:
    """A value as the client wrote it: JSON, shortened to 40 characters."""
    if isinstance(value, np.generic):
        value = value.item()
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return shorten(text)


def shorten(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def integer_range(datatype: str) -> tuple[int, int]:
    """The smallest and largest value of an integer datatype."""
    info = np.iinfo(cast("np.dtype[np.integer[Any]]", V2_TO_NUMPY[datatype]))
    return int(info.min), int(info.max)


def cell_value(text: str, datatype: str) -> Any:
    """The JSON value a CSV cell spells for ``datatype``: its text for BYTES, a
    boolean for ``true``/``false``, a number for a number, else the text itself
    (which :func:`to_array` then refuses). ValueRefused for an integer with more
    digits than any datatype holds."""
    if datatype == "BYTES":
        return text
    number = _NUMBER.fullmatch(text)
    if number is None:
        boolean = _BOOLEANS.get(text.strip().lower())
        return text if boolean is None else boolean
    sign, digits, decimal = number.groups()
    if decimal is not None:
        return float(decimal)
    if len(digits) > _MAX_DIGITS:
        raise ValueRefused(shorten(repr(text)), _out_of_range(datatype))
    return -int(digits) if sign == "-" else int(digits)


def to_array(values: Any, datatype: str, allow_non_finite: bool) -> np.ndarray:
    """Nested JSON values (or an array) as an array of ``datatype``'s numpy dtype,
    keeping their nesting; ValueRefused, with the first offending value's
    position, when one is not taken."""
    if datatype == "BYTES":
        return _refuse_first(values, _is_string, "not a string, model expects BYTES")
    try:
        raw = np.asarray(values)
    except (ValueError, OverflowError):
        raise ValueRefused("", "nested lists of different lengths") from None
    if raw.size == 0:
        return raw.astype(V2_TO_NUMPY[datatype])
    if datatype != "BOOL" and raw.dtype.kind in "iuf":
        _refuse_hidden_booleans(values, raw, datatype)
    limit = _FLOAT_LIMITS.get(datatype)
    # The usual request: numbers for a float input. When the largest magnitude
    # fits the datatype (NaN fails the comparison), every value is finite and the
    # cast cannot overflow: the checks below would find nothing.
    if limit is not None and raw.dtype.kind == "f" and np.abs(raw).max() <= limit:
        return raw.astype(V2_TO_NUMPY[datatype])
    if datatype == "BOOL":
        if raw.dtype.kind != "b":
            _refuse_first(values, _is_bool, "not a boolean, model expects BOOL")
        return raw.astype(np.bool_)
    if raw.dtype.kind not in "iuf":
        raw = _refuse_first(values, _is_number, _not_a_number(datatype))
    if datatype in INTEGER_TYPES:
        return _to_integers(values, raw, datatype)
    if raw.dtype.kind == "O":
        raw = _as_floats(raw, datatype)
    with np.errstate(over="ignore", invalid="ignore"):
        array = raw.astype(V2_TO_NUMPY[datatype])
    check_floats(array, raw, datatype, allow_non_finite)
    return array


# Up to this many values, booleans are looked for value by value.
_SMALL = 64


def _refuse_hidden_booleans(values: Any, raw: np.ndarray, datatype: str) -> None:
    """Refuse booleans that numpy read as 0 or 1 among numbers: only the values
    that are 0 or 1 are looked at as sent (arrays hold no booleans)."""
    if isinstance(values, np.ndarray):
        return
    if raw.ndim == 2 and raw.size <= _SMALL:
        # The usual on-demand request: a few rows. Looking at each value costs
        # less than the array comparisons below.
        for row_index, row in enumerate(values):
            for column, value in enumerate(row):
                if type(value) is bool:
                    raise ValueRefused(
                        show(value), _not_a_number(datatype), (row_index, column)
                    )
        return
    candidates = np.flatnonzero((raw == 0) | (raw == 1))
    if not candidates.size:
        return
    if raw.ndim > 2:
        objects = np.asarray(values, dtype=object)
        booleans = _BOOLEAN_TEST(objects).astype(bool)
        if booleans.any():
            raise _refused_at(objects, booleans, _not_a_number(datatype))
        return
    width = raw.shape[1] if raw.ndim == 2 else 1
    for index in candidates.tolist():
        row, column = divmod(index, width)
        value = values[row][column] if raw.ndim == 2 else values[index]
        if type(value) is bool:
            raise ValueRefused(
                show(value), _not_a_number(datatype), _position(index, raw.shape)
            )


def _not_a_number(datatype: str) -> str:
    return f"not a number, model expects {datatype}"


def check_floats(
    array: np.ndarray, raw: np.ndarray, datatype: str, allow_non_finite: bool
) -> None:
    """Refuse the values of ``raw`` that overflowed ``datatype`` in ``array`` (its
    cast), and NaN or Infinity unless the model takes them."""
    finite = np.isfinite(array)
    if finite.all():
        return
    overflow = ~finite & np.isfinite(raw)
    if overflow.any():
        raise _refused_at(raw, overflow, _out_of_range(datatype))
    if not allow_non_finite:
        raise _refused_at(
            raw,
            ~finite,
            "not a finite number; this model does not take NaN or Infinity",
        )


def _out_of_range(datatype: str) -> str:
    if datatype in INTEGER_TYPES:
        low, high = integer_range(datatype)
        return f"out of range for {datatype} ({low} to {high})"
    return f"out of range for {datatype}"


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


_BOOLEAN_TEST = np.frompyfunc(_is_bool, 1, 1)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not (
        isinstance(value, bool | np.bool_)
    )


def _refuse_first(
    values: Any, accept: Callable[[Any], bool], problem: str
) -> np.ndarray:
    """``values`` as an object array, refusing the first one ``accept`` does not.

    Used where numpy could not type the data (it turns ``[1, "a"]`` into strings),
    to look at the values as the client sent them."""
    try:
        objects = np.asarray(values, dtype=object)
    except ValueError:
        raise ValueRefused("", "nested lists of different lengths") from None
    for index, value in enumerate(objects.flat):
        if not accept(value):
            raise ValueRefused(show(value), problem, _position(index, objects.shape))
    return objects


def _as_floats(objects: np.ndarray, datatype: str) -> np.ndarray:
    """Numbers numpy kept as Python objects (integers beyond 64 bits) as floats."""
    for index, value in enumerate(objects.flat):
        try:
            float(value)
        except OverflowError:
            raise ValueRefused(
                show(value), _out_of_range(datatype), _position(index, objects.shape)
            ) from None
    return objects.astype(np.float64)


def _to_integers(values: Any, raw: np.ndarray, datatype: str) -> np.ndarray:
    low, high = integer_range(datatype)
    if raw.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(raw) & (raw == np.floor(raw))
        if not integral.all():
            raise _refused_at(
                raw, ~integral, f"not an integer, model expects {datatype}"
            )
        if np.abs(raw).max() >= _EXACT_FLOAT:
            # numpy reads [0, 2**64 - 1] as floats: compare the values as sent.
            raw = np.asarray(values, dtype=object)
    if raw.dtype.kind == "O":
        for index, value in enumerate(raw.flat):
            if isinstance(value, float) and not value.is_integer():
                raise ValueRefused(
                    show(value),
                    f"not an integer, model expects {datatype}",
                    _position(index, raw.shape),
                )
    outside = (raw < low) | (raw > high)
    if outside.any():
        raise _refused_at(raw, outside, _out_of_range(datatype))
    return raw.astype(V2_TO_NUMPY[datatype])


def _refused_at(raw: np.ndarray, where: np.ndarray, problem: str) -> ValueRefused:
    index = int(np.argmax(where.ravel()))
    return ValueRefused(show(raw.flat[index]), problem, _position(index, raw.shape))


def _position(index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(index, shape)) if shape else ()
