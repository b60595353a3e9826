"""Prediction cells (pure): a column of output values formatted at once, with
integer arithmetic and lookup tables, in CSV's or JSON's syntax."""

from __future__ import annotations

import json
import math

import numpy as np

from chalicelib.batch.tables.formats import JSONL

# Floats are written like printf's "%.6f".
DECIMALS = 6

# Numbers and labels as NUL-padded byte matrices: a column of m cells is an
# (m, width) uint8 matrix, each cell left- or right-aligned and padded with NUL
# bytes. A row's suffix is its cells and separators side by side; deleting every
# NUL afterwards leaves exactly the text. NUL cannot occur in the text itself:
# labels are sanitised and numbers are digits.


def _digit_tables() -> tuple[np.ndarray, np.ndarray]:
    """The 4-digit groups 0000 to 9999 as ASCII, and the same with leading zeros
    as NUL ("0" kept for zero itself), for the most significant group. Built with
    array arithmetic: cheap enough at import for every function's cold start."""
    numbers = np.arange(10_000)
    places = np.array([1000, 100, 10, 1])
    digits = (numbers[:, None] // places) % 10
    table = (digits + ord("0")).astype(np.uint8)
    leading = table.copy()
    leading[numbers[:, None] < places] = 0
    leading[0, 3] = ord("0")
    return table, leading


_DIGITS4, _LEADING4 = _digit_tables()
_DIGITS4_WORDS = _DIGITS4.view(np.uint32).ravel()
_LEADING4_WORDS = _LEADING4.view(np.uint32).ravel()
_DIGITS2_HALVES = _DIGITS4[:100, 2:].copy().view(np.uint16).ravel()
_GROUP = np.uint64(10_000)
_SCALE = 10**DECIMALS
_FAST_FLOAT_LIMIT = 9e12  # |value| * 10**6 stays an exact integer below 2**63


def _digits(magnitudes: np.ndarray) -> np.ndarray:
    """Non-negative integers (uint64) -> (m, d) decimal digits, right-aligned with
    leading zeros as NUL, where d is the digit count of the largest."""
    count = magnitudes.shape[0]
    width = len(str(int(magnitudes.max()))) if count else 1
    groups = (width + 3) // 4
    words = np.empty((count, groups), np.uint32)
    started = np.zeros(count, bool)
    for group in range(groups):
        power = np.uint64(10_000 ** (groups - 1 - group))
        quotient = (magnitudes // power) % _GROUP if group else magnitudes // power
        word = np.where(started, _DIGITS4_WORDS[quotient], _LEADING4_WORDS[quotient])
        if group < groups - 1:
            word[~started & (quotient == 0)] = 0
            started |= quotient > 0
        words[:, group] = word
    return words.view(np.uint8).reshape(count, 4 * groups)[:, 4 * groups - width :]


def _with_sign(negative: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """Digits with a "-" column in front when any value is negative."""
    if not negative.any():
        return digits
    matrix = np.empty((digits.shape[0], digits.shape[1] + 1), np.uint8)
    matrix[:, 0] = negative.view(np.uint8) * np.uint8(ord("-"))
    matrix[:, 1:] = digits
    return matrix


def _texts(texts: list[str]) -> np.ndarray:
    """Python strings -> a NUL-padded matrix."""
    encoded = [text.encode() for text in texts]
    width = max((len(item) for item in encoded), default=0) or 1
    return np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(-1, width)


def _python_float(value: float, fmt: str) -> str:
    if math.isfinite(value):
        return f"{value:.{DECIMALS}f}"
    if fmt == JSONL:
        return "null"
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def format_floats(values: np.ndarray, fmt: str) -> np.ndarray:
    """Floats as printf's "%.6f" would write them (non-finite: NaN/inf in CSV,
    null in JSON). FP16 and FP32 take integer arithmetic; FP64, whose scaled value
    is not exact in float64, and huge values take Python's formatting."""
    exact = values.dtype in (np.float16, np.float32)
    wide = values.astype(np.float64)
    magnitude = np.abs(wide)
    if not exact or not (magnitude < _FAST_FLOAT_LIMIT).all():
        return _texts([_python_float(float(value), fmt) for value in wide])
    scaled = np.rint(magnitude * _SCALE).astype(np.uint64)
    whole, fraction = np.divmod(scaled, np.uint64(_SCALE))
    integer = _with_sign(np.signbit(wide), _digits(whole))
    count, width = integer.shape
    matrix = np.empty((count, width + 1 + DECIMALS), np.uint8)
    matrix[:, :width] = integer
    matrix[:, width] = ord(".")
    high, low = np.divmod(fraction, _GROUP)
    matrix[:, width + 1 : width + 3].view(np.uint16)[:, 0] = _DIGITS2_HALVES[high]
    matrix[:, width + 3 :].view(np.uint32)[:, 0] = _DIGITS4_WORDS[low]
    return matrix


def format_integers(values: np.ndarray) -> np.ndarray:
    """Integers in decimal; the few beyond int64's range take Python's formatting."""
    if values.dtype == np.uint64 and values.size and values.max() > 2**63 - 1:
        return _texts([str(int(value)) for value in values])
    signed = values.astype(np.int64)
    if signed.size and signed.min() == np.iinfo(np.int64).min:
        return _texts([str(int(value)) for value in signed])
    return _with_sign(signed < 0, _digits(np.abs(signed).astype(np.uint64)))


def quote_csv(text: str) -> str:
    """A CSV cell for ``text``, quoted when it needs to be."""
    if any(character in text for character in ',"\n\r') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def _text_cell(text: str, fmt: str) -> str:
    # Line ends would split an output row; NUL is the padding.
    clean = text.replace("\r", " ").replace("\n", " ").replace("\0", "")
    return json.dumps(clean, ensure_ascii=False) if fmt == JSONL else quote_csv(clean)


def format_cells(values: np.ndarray, fmt: str) -> np.ndarray:
    """One column of output values as a NUL-padded matrix, in ``fmt``'s syntax."""
    kind = values.dtype.kind
    if kind == "f":
        return format_floats(values, fmt)
    if kind == "b":
        return _texts(["true" if value else "false" for value in values.tolist()])
    if kind in "iu":
        return format_integers(values)
    return _texts([_text_cell(_as_text(value), fmt) for value in values.tolist()])


def _as_text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def format_labels(
    indices: np.ndarray, labels: tuple[str, ...] | None, fmt: str
) -> np.ndarray:
    """Class indices as their names (integers when a name is missing)."""
    if labels is None or indices.dtype.kind not in "iu":
        return format_cells(indices, fmt)
    if indices.size and (indices.min() < 0 or indices.max() >= len(labels)):
        return format_cells(indices, fmt)
    table = _texts([_text_cell(label, fmt) for label in labels])
    named: np.ndarray = table[indices]
    return named
