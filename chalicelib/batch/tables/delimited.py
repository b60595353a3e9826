"""CSV chunks parsed into model inputs (pure), against the file's header.

Speed comes from never touching a clean row in Python. A CSV chunk without quotes
is checked with vectorised byte arithmetic (fields per line) and its input columns
are parsed by numpy's C reader. A chunk that fails any check goes down the careful
path, one row at a time, which names the exact reason for every row it rejects.
Both paths accept the same rows and produce the same bytes. What a value may be is
:mod:`chalicelib.values`' rules, the ones REST requests follow: a CSV cell is read
as the JSON value it spells, then checked like one.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.batch.tables.chunks import ChunkBuilder, Lines, ParsedChunk, RowError
from chalicelib.batch.tables.columns import Feature
from chalicelib.batch.tables.records import MAX_RECORD_BYTES, NEWLINE
from chalicelib.datatypes import INTEGER_TYPES
from chalicelib.errors import BatchFileError
from chalicelib.values import (
    CheckedInputs,
    ValueRefused,
    cell_value,
    shorten,
    to_array,
)

_COMMA = 44
# Pass-through cells can be long: the careful path takes what the fast path takes
# (the csv module refuses fields over 128 KiB by default; the limit is global).
csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_BYTES))
# Past 2**53 float64 skips integers: the careful path reads such cells exactly.
_EXACT_FLOAT = 2.0**53


def _numeric_inputs(
    values: np.ndarray, features: Sequence[Feature]
) -> CheckedInputs | None:
    """Columns of float64 cells -> inputs, or None when a cell needs the careful
    path: any refused value, an infinity (``1e400`` and an integer literal beyond
    float64 read alike), an integer past 2**53 (float64 skips integers there), a
    BOOL (its cells are words)."""
    inputs = CheckedInputs()
    offset = 0
    for feature in features:
        block = values[:, offset : offset + feature.size]
        offset += feature.size
        if feature.datatype == "BOOL" or np.isinf(block).any():
            return None
        if (
            feature.datatype in INTEGER_TYPES
            and not (np.abs(block) < _EXACT_FLOAT).all()
        ):
            return None
        try:
            array = to_array(block, feature.datatype, feature.allow_non_finite)
        except ValueRefused:
            return None
        inputs[feature.name] = array.reshape((values.shape[0], *feature.shape))
    return inputs


# Plain decimals (an optional minus, digits, an optional point) of at most this
# many digits are read with integer arithmetic: below 2**53, the digits and the
# power of ten are exact doubles, and one IEEE division rounds their quotient
# correctly, as numpy's reader (Python's correctly rounded one) does.
_EXACT_DIGITS = 15
_POWERS_OF_TEN = 10.0 ** np.arange(_EXACT_DIGITS + 1)
_MINUS, _POINT, _ZERO = 45, 46, 48


def _decimal_columns(
    buffer: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    commas: np.ndarray,
    positions: Sequence[int],
) -> np.ndarray | None:
    """The cells at ``positions`` of every line as float64 (rows, positions), or
    None unless each is ``-?digits[.digits]`` with 1 to 15 digits (either side of
    the point may be empty, not both): numpy's reader, slower, then reads them."""
    separators = commas.reshape(ends.size, -1)
    last = separators.shape[1]
    firsts = [starts if p == 0 else separators[:, p - 1] + 1 for p in positions]
    lasts = [ends if p == last else separators[:, p] for p in positions]
    column = _decimals(buffer, np.concatenate(firsts), np.concatenate(lasts))
    if column is None:
        return None
    values: np.ndarray = column.reshape(len(positions), ends.size).T
    return values


def _decimals(
    buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> np.ndarray | None:
    """The cells ``buffer[starts:ends]`` as float64, or None (``_decimal_columns``).

    Cells are laid out right-aligned as the columns of a (width, cells) matrix, so
    that every step is one numpy operation over all of them."""
    lengths = ends - starts
    width = int(lengths.max())
    if int(lengths.min()) < 1 or width > _EXACT_DIGITS + 2:
        return None
    count = lengths.size
    # Left of a short cell lie the bytes before it (or, for the first, the
    # buffer's last): they read as leading zeros.
    cells = np.stack([buffer[ends - offset] for offset in range(width, 0, -1)])
    cells[np.arange(width, 0, -1)[:, None] > lengths] = _ZERO
    values = cells - np.uint8(_ZERO)
    not_digits = values >= 10
    points = cells == _POINT
    others = np.flatnonzero(not_digits & ~points)
    # Besides digits and points, only a minus, as a cell's first byte.
    negative = others % count
    if (cells.ravel()[others] != _MINUS).any() or (
        others // count != width - lengths[negative]
    ).any():
        return None
    point_counts = points.sum(axis=0, dtype=np.int8)
    if int(point_counts.max()) > 1:
        return None
    digit_counts = lengths - point_counts
    digit_counts[negative] -= 1
    if int(digit_counts.min()) < 1 or int(digit_counts.max()) > _EXACT_DIGITS:
        return None
    values[not_digits] = 0
    multipliers = np.where(not_digits, np.int8(1), np.int8(10))
    mantissa = values[0].astype(np.int64)
    for row in range(1, width):
        mantissa *= multipliers[row]
        mantissa += values[row]
    where_points = np.flatnonzero(points)
    fraction_digits = np.zeros(count, np.intp)
    fraction_digits[where_points % count] = width - 1 - where_points // count
    column: np.ndarray = mantissa.astype(np.float64) / _POWERS_OF_TEN[fraction_digits]
    column[negative] = -column[negative]
    return column


def _csv_fields(text: str) -> list[str]:
    return next(csv.reader([text]), [])


@dataclass(frozen=True)
class CsvTable:
    """A CSV file's header, matched to the model's features.

    ``positions`` gives, for every feature value in order, its column.
    """

    header: tuple[str, ...]
    features: tuple[Feature, ...]
    positions: tuple[int, ...]
    by_name: bool

    @functools.cached_property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """Per feature, the columns of its values."""
        groups, start = [], 0
        for feature in self.features:
            groups.append(self.positions[start : start + feature.size])
            start += feature.size
        return tuple(groups)

    @classmethod
    def from_header(cls, line: bytes, features: tuple[Feature, ...]) -> CsvTable:
        """Match the header's columns to the features: by name when any column is
        named after one, else the first columns by position. BatchFileError when
        neither works."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BatchFileError(f"the header is not UTF-8: {error.reason}") from None
        names = tuple(_csv_fields(text))
        if not text.strip() or not names:
            raise BatchFileError(
                "the first line is empty: a CSV file starts with a header"
            )
        stripped = [name.strip() for name in names]
        wanted = [column for feature in features for column in feature.columns()]
        found = [column for column in wanted if column in stripped]
        total = len(wanted)
        if found:
            missing = [column for column in wanted if column not in stripped]
            if missing:
                raise BatchFileError(
                    f"the header names {', '.join(found)} but not "
                    f"{', '.join(missing)}: name every input column, or none to "
                    "take the first columns by position"
                )
            for column in wanted:
                if stripped.count(column) > 1:
                    raise BatchFileError(f"column {column!r} appears twice")
            positions = tuple(stripped.index(column) for column in wanted)
            return cls(names, features, positions, by_name=True)
        if len(names) < total:
            raise BatchFileError(
                f"no column is named after the model's inputs (expected "
                f"{', '.join(wanted)}) and the header has {len(names)} columns, "
                f"fewer than the {total} the model takes by position"
            )
        return cls(names, features, tuple(range(total)), by_name=False)

    @property
    def fast(self) -> bool:
        """Whether chunks can take the vectorised path (numeric inputs only)."""
        return all(feature.datatype != "BYTES" for feature in self.features)

    def column_name(self, position: int) -> str:
        return self.header[position].strip()

    def parse(self, chunk: bytes, first_row: int, first_line: int) -> ParsedChunk:
        """The chunk's rows (whole records ending in a newline, UTF-8)."""
        parsed = self._parse_fast(chunk) if self.fast else None
        if parsed is None:
            parsed = self._parse_careful(chunk, first_row, first_line)
        return parsed

    def _parse_fast(self, chunk: bytes) -> ParsedChunk | None:
        """Vectorised: None unless every line is a clean row (no quotes, no blank
        lines, the header's field count, numbers that fit their inputs)."""
        if b'"' in chunk or b"\n\n" in chunk or chunk.startswith(b"\n"):
            return None
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
            if b"\r" in chunk:
                return None
        buffer = np.frombuffer(chunk, np.uint8)
        ends = np.flatnonzero(buffer == NEWLINE)
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        # Every line has the header's fields: as many commas in all as that
        # makes, and each line's share of them (in order) inside it.
        commas = np.flatnonzero(buffer == _COMMA)
        separators = len(self.header) - 1
        if commas.size != ends.size * separators:
            return None
        if separators:
            per_line = commas.reshape(ends.size, separators)
            if (per_line[:, 0] < starts).any() or (per_line[:, -1] > ends).any():
                return None
        values = _decimal_columns(buffer, starts, ends, commas, self.positions)
        if values is None:
            try:
                values = np.loadtxt(
                    io.BytesIO(chunk),
                    delimiter=",",
                    usecols=self.positions,
                    comments=None,
                    dtype=np.float64,
                    ndmin=2,
                )
            except ValueError:
                return None
        if values.shape[0] != ends.size:
            return None
        inputs = _numeric_inputs(values, self.features)
        if inputs is None:
            return None
        heads = Lines(chunk, starts, ends)
        return ParsedChunk(heads, inputs, [], rows=ends.size, lines=ends.size)

    def _parse_careful(
        self, chunk: bytes, first_row: int, first_line: int
    ) -> ParsedChunk:
        text = chunk.decode("utf-8")
        lines = [line + "\n" for line in text.split("\n")[:-1]]
        reader = csv.reader(iter(lines))
        rows = ChunkBuilder(self.features)
        row = first_row
        consumed = 0
        for cells in reader:
            start, consumed = consumed, reader.line_num
            record = "".join(lines[start:consumed]).removesuffix("\n")
            record = record.removesuffix("\r")
            if not record.strip():
                continue
            try:
                values = self._row_values(cells)
            except RowError as error:
                rows.reject(row, first_line + start, record, str(error))
            else:
                head = record.encode()
                rows.add(row, first_line + start, record, head, values, cells)
            row += 1
        return rows.parsed(self._refusal, row - first_row, len(lines))

    def _row_values(self, cells: list[str]) -> list[list[Any]]:
        if len(cells) != len(self.header):
            raise RowError(
                f"the row has {len(cells)} fields, the header has {len(self.header)}"
            )
        try:
            return [
                [cell_value(cells[position], feature.datatype) for position in group]
                for feature, group in zip(self.features, self.groups, strict=True)
            ]
        except ValueRefused as error:
            position = next(
                position
                for feature, group in zip(self.features, self.groups, strict=True)
                for position in group
                if not _reads(cells[position], feature.datatype)
            )
            raise RowError(
                f"column {self.column_name(position)!r} is {_cell(cells[position])}, "
                f"{error.problem}"
            ) from None

    def _refusal(self, cells: list[str], feature: int, error: ValueRefused) -> str:
        """Why a row's value was refused, naming its column and cell."""
        position = self.groups[feature][(error.position or (0,))[0]]
        cell = cells[position]
        what = f"column {self.column_name(position)!r}"
        if not cell.strip():
            return f"{what} is empty"
        return f"{what} is {_cell(cell)}, {error.problem}"


def _reads(text: str, datatype: str) -> bool:
    try:
        cell_value(text, datatype)
    except ValueRefused:
        return False
    return True


def _cell(text: str) -> str:
    return repr(shorten(text))
