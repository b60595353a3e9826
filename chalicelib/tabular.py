"""Batch files as tables (pure): cut a byte stream into chunks of records, parse a
chunk of CSV or JSON Lines into model inputs, and append predictions to each row.

Speed comes from never touching a clean row in Python. A CSV chunk without quotes
is checked with vectorised byte arithmetic (fields per line), its input columns
are parsed by numpy's C reader, and each output row is the input line's bytes
followed by prediction cells formatted with integer arithmetic and lookup tables.
A chunk that fails any check goes down the careful path, one row at a time, which
names the exact reason for every row it rejects. Both paths accept the same rows
and produce the same bytes. What a value may be is :mod:`chalicelib.values`'
rules, the ones REST requests follow: a CSV cell is read as the JSON value it
spells, then checked like one.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chalicelib.datatypes import INTEGER_TYPES, V2_TO_NUMPY
from chalicelib.errors import BatchFileError
from chalicelib.registry.manifest import Manifest, classifier_outputs
from chalicelib.values import (
    LONG_NUMBER,
    MAX_NESTING,
    CheckedInputs,
    ValueRefused,
    accepts_non_finite,
    cell_value,
    shorten,
    show,
    to_array,
)

CSV = "csv"
JSONL = "jsonl"

# Floats are written like printf's "%.6f".
DECIMALS = 6
_BOM = b"\xef\xbb\xbf"
_NEWLINE, _COMMA, _QUOTE = 10, 44, 34
# A record without a line end in this many bytes is not a table's row; a header
# longer, or with more columns, than these is not a table's header. Parsing costs
# about ten times a record's size, so these bound a chunk's memory too.
MAX_RECORD_BYTES = 8 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024
MAX_COLUMNS = 65_536
# Pass-through cells can be long: the careful path takes what the fast path takes
# (the csv module refuses fields over 128 KiB by default; the limit is global).
csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_BYTES))


# -- the model's side: features in, fields out ----------------------------------


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


# -- cutting a stream into chunks of records ------------------------------------


class RecordSplitter:
    """Cuts a byte stream into chunks of whole records, ``rows`` lines at most each.

    Records end at a newline; with ``quoted`` (CSV), a newline inside a quoted
    field does not end one. A UTF-8 byte-order mark at the start is dropped (unless
    the stream is not ``at_start``: a shard from a record boundary inside a file).
    With ``header``, the first record is kept apart in ``header`` (without its line
    end).

    Memory is bounded by the block and the record being read: each block is scanned
    once (the quote state carries over), an unfinished record is kept as pieces,
    and BatchFileError stops a record over ``max_record_bytes`` or a header over
    ``max_header_bytes`` or ``max_columns`` fields.
    """

    def __init__(
        self,
        rows: int,
        *,
        quoted: bool,
        header: bool,
        max_record_bytes: int,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_columns: int = MAX_COLUMNS,
        at_start: bool = True,
    ) -> None:
        self._rows = max(1, rows)
        self._quoted = quoted
        self._wants_header = header
        self._max_record_bytes = max_record_bytes
        self._max_header_bytes = max_header_bytes
        self._max_columns = max_columns
        # The unfinished record: its pieces, their size, and whether it ends
        # inside a quoted field.
        self._pieces: list[bytes] = []
        self._pending = 0
        self._in_quotes = False
        self._started = not at_start
        self.header: bytes | None = None
        self.header_lines = 0

    def feed(self, block: bytes) -> list[bytes]:
        """Whole-record chunks completed by ``block``."""
        if not self._started:
            block = self._take() + block
            if len(block) < len(_BOM) and _BOM.startswith(block):
                self._keep(block)
                return []
            self._started = True
            block = block.removeprefix(_BOM)
        ends = self._record_ends(block)
        if not ends.size:
            self._keep(block)
            return []
        offset = self._pending
        data = self._take() + block if offset else block
        ends += offset
        first = 0
        if self._wants_header and self.header is None:
            self._set_header(data[: int(ends[0])])
            first = int(ends[0]) + 1
            ends = ends[1:]
        chunks = []
        for start in range(0, ends.size, self._rows):
            last = int(ends[min(start + self._rows, ends.size) - 1]) + 1
            chunks.append(data[first:last])
            first = last
        self._keep(data[first:])
        return chunks

    def close(self) -> list[bytes]:
        """The last record, when the stream does not end with a newline."""
        rest = self._take()
        if not rest:
            return []
        if not self._started:
            rest = rest.removeprefix(_BOM)
        if self._wants_header and self.header is None:
            self._set_header(rest)
            return []
        return [rest + b"\n"]

    def _record_ends(self, block: bytes) -> np.ndarray:
        """Offsets in ``block`` of the newlines that end a record; updates the
        quote state. Quotes are counted modulo 256 (their parity is all that
        matters), so the scan costs two bytes per byte of the block."""
        buffer = np.frombuffer(block, np.uint8)
        ends = np.flatnonzero(buffer == _NEWLINE)
        if not self._quoted:
            return ends
        if b'"' not in block:
            return ends[:0] if self._in_quotes else ends
        parity = np.cumsum(buffer == _QUOTE, dtype=np.uint8)
        outside: np.ndarray = (parity[ends] & 1) == int(self._in_quotes)
        self._in_quotes ^= bool(parity[-1] & 1)
        return np.asarray(ends[outside])

    def _keep(self, data: bytes) -> None:
        """Hold ``data`` as (the start of) the unfinished record, within bounds."""
        if data:
            self._pieces.append(data)
            self._pending += len(data)
        if self._wants_header and self.header is None:
            if self._pending > self._max_header_bytes:
                raise BatchFileError(
                    f"the header line is longer than {self._max_header_bytes} "
                    "bytes: a CSV file starts with a line of column names"
                )
        elif self._pending > self._max_record_bytes:
            quote = ": a quoted field is not closed" if self._in_quotes else ""
            raise BatchFileError(
                f"a record is longer than {self._max_record_bytes} bytes "
                f"(no line end found{quote})"
            )

    def _take(self) -> bytes:
        """The unfinished record's bytes, now no longer held."""
        data = b"".join(self._pieces)
        self._pieces = []
        self._pending = 0
        return data

    def _set_header(self, line: bytes) -> None:
        if len(line) > self._max_header_bytes:
            raise BatchFileError(
                f"the header line is longer than {self._max_header_bytes} bytes: "
                "a CSV file starts with a line of column names"
            )
        # Commas inside quoted names count too: a bound, not the exact count.
        if line.count(b",") >= self._max_columns:
            raise BatchFileError(
                f"the header has more than {self._max_columns} columns"
            )
        self.header = line.removesuffix(b"\r")
        self.header_lines = self.header.count(b"\n") + 1


# -- parsed chunks and rejected rows --------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """A row that was not predicted: its number among the data rows, the line of
    the file it starts on, its text and why."""

    row: int
    line: int
    raw: str
    reason: str

    def to_json(self) -> bytes:
        record = {
            "row": self.row,
            "line": self.line,
            "raw": self.raw,
            "reason": self.reason,
        }
        return json.dumps(record, ensure_ascii=False).encode() + b"\n"


# JSON Lines row shapes; each gets its own suffix template.
ARRAY_ROW, OBJECT_ROW, OBJECT_ROW_PREFIXED = 0, 1, 2


@dataclass
class ParsedChunk:
    """The rows of a chunk that go to the model, and the ones that do not.

    ``heads`` holds, per accepted row, the bytes its output row starts with (the
    record, without its line end or, in JSON, its closing bracket); ``kinds`` the
    JSON row shapes; ``rows`` counts records read, ``lines`` the lines consumed.
    """

    heads: list[bytes]
    inputs: CheckedInputs
    rejections: list[Rejection]
    rows: int
    lines: int
    kinds: np.ndarray | None = None

    @property
    def accepted(self) -> int:
        return len(self.heads)


class RowError(ValueError):
    """Why one row cannot be predicted (the careful path's verdict)."""


# -- values: rows of Python values checked into inputs --------------------------


def _check_rows(
    rows: list[list[list[Any]]], features: Sequence[Feature]
) -> tuple[CheckedInputs, list[tuple[int, int, ValueRefused]]]:
    """Rows (each a flat list of values per feature, of the feature's size) as
    inputs, and the rows refused: (row index, feature index, why).

    Each feature's column is checked at once; a column with a refused value is
    checked again row by row, to find every refused row (the rules are the same).
    """
    try:
        return _stack_columns(rows, features), []
    except ValueRefused:
        pass
    kept: list[list[Any]] = []
    refused: list[tuple[int, int, ValueRefused]] = []
    for index, row in enumerate(rows):
        for position, (feature, values) in enumerate(zip(features, row, strict=True)):
            try:
                to_array(values, feature.datatype, feature.allow_non_finite)
            except ValueRefused as error:
                refused.append((index, position, error))
                break
        else:
            kept.append(row)
    return _stack_columns(kept, features), refused


def _stack_columns(
    rows: list[list[list[Any]]], features: Sequence[Feature]
) -> CheckedInputs:
    inputs = CheckedInputs()
    for position, feature in enumerate(features):
        column = [row[position] for row in rows]
        array = to_array(column, feature.datatype, feature.allow_non_finite)
        inputs[feature.name] = array.reshape((len(rows), *feature.shape))
    return inputs


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


# -- CSV ------------------------------------------------------------------------


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
        lines = chunk.split(b"\n")
        lines.pop()  # the chunk ends with a newline
        buffer = np.frombuffer(chunk, np.uint8)
        ends = np.flatnonzero(buffer == _NEWLINE)
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        commas = np.add.reduceat(buffer == _COMMA, starts, dtype=np.int64)
        if (commas != len(self.header) - 1).any():
            return None
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
        if values.shape[0] != len(lines):
            return None
        inputs = _numeric_inputs(values, self.features)
        if inputs is None:
            return None
        return ParsedChunk(lines, inputs, [], rows=len(lines), lines=len(lines))

    def _parse_careful(
        self, chunk: bytes, first_row: int, first_line: int
    ) -> ParsedChunk:
        text = chunk.decode("utf-8")
        lines = [line + "\n" for line in text.split("\n")[:-1]]
        reader = csv.reader(iter(lines))
        rows = _Rows(self.features)
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


class _Rows:
    """A chunk's rows as they are read: those refused for their structure, and the
    candidates whose values are then checked all at once (``_check_rows``).

    Each candidate keeps ``detail``, what a refusal's message needs (its CSV
    cells, or whether a JSON row gave its values by position)."""

    def __init__(self, features: tuple[Feature, ...]) -> None:
        self.features = features
        self.rejections: list[Rejection] = []
        self.numbers: list[tuple[int, int, str]] = []
        self.heads: list[bytes] = []
        self.values: list[list[list[Any]]] = []
        self.kinds: list[int] = []
        self.details: list[Any] = []

    def reject(self, row: int, line: int, raw: str, reason: str) -> None:
        self.rejections.append(Rejection(row, line, raw, reason))

    def add(
        self,
        row: int,
        line: int,
        raw: str,
        head: bytes,
        values: list[list[Any]],
        detail: Any,
        kind: int = ARRAY_ROW,
    ) -> None:
        self.numbers.append((row, line, raw))
        self.heads.append(head)
        self.values.append(values)
        self.details.append(detail)
        self.kinds.append(kind)

    def parsed(
        self,
        explain: Callable[[Any, int, ValueRefused], str],
        rows: int,
        lines: int,
        *,
        with_kinds: bool = False,
    ) -> ParsedChunk:
        """The chunk: candidates whose values pass as its inputs, the others
        rejected with ``explain(detail, feature, refusal)``."""
        inputs, refused = _check_rows(self.values, self.features)
        heads, kinds = self.heads, self.kinds
        if refused:
            dropped = set()
            for index, feature, error in refused:
                row, line, raw = self.numbers[index]
                reason = explain(self.details[index], feature, error)
                self.reject(row, line, raw, reason)
                dropped.add(index)
            self.rejections.sort(key=lambda rejection: rejection.row)
            keep = [index not in dropped for index in range(len(heads))]
            heads = [head for head, kept in zip(heads, keep, strict=True) if kept]
            kinds = [kind for kind, kept in zip(kinds, keep, strict=True) if kept]
        return ParsedChunk(
            heads,
            inputs,
            self.rejections,
            rows=rows,
            lines=lines,
            kinds=np.array(kinds, dtype=np.int8) if with_kinds else None,
        )


# -- JSON Lines -------------------------------------------------------------------


@dataclass(frozen=True)
class JsonLinesTable:
    """JSON Lines rows: an array (the features by position, then anything else)
    or an object (keys named after the inputs, else its first values by position).
    """

    features: tuple[Feature, ...]
    prediction_keys: frozenset[str] = field(default_factory=frozenset)

    @property
    def width(self) -> int:
        return sum(feature.size for feature in self.features)

    def parse(self, chunk: bytes, first_row: int, first_line: int) -> ParsedChunk:
        rows = _Rows(self.features)
        row = first_row
        lines = chunk.split(b"\n")
        lines.pop()
        for offset, line in enumerate(lines):
            record = line.strip()
            if not record:
                continue
            raw = line.decode("utf-8").removesuffix("\r")
            try:
                kind, by_position, values = self._row(raw)
            except RowError as error:
                rows.reject(row, first_line + offset, raw, str(error))
            else:
                head = record[:-1]
                rows.add(row, first_line + offset, raw, head, values, by_position, kind)
            row += 1
        return rows.parsed(self._refusal, row - first_row, len(lines), with_kinds=True)

    def _row(self, record: str) -> tuple[int, bool, list[list[Any]]]:
        """The row's shape, whether it gives its values by position, and its
        values per feature; RowError for a row whose structure does not fit."""
        try:
            document = json.loads(record)
        except json.JSONDecodeError as error:
            raise RowError(
                f"not valid JSON: {error.msg} at column {error.colno}"
            ) from None
        except RecursionError:
            raise RowError("not valid JSON: nested too deeply") from None
        except ValueError:
            raise RowError(f"not valid JSON: {LONG_NUMBER}") from None
        if isinstance(document, list):
            return ARRAY_ROW, True, self._by_position(document, "the array")
        if isinstance(document, dict):
            clash = not self.prediction_keys.isdisjoint(document)
            kind = OBJECT_ROW_PREFIXED if clash else OBJECT_ROW
            if any(f.name in document for f in self.features):
                return kind, False, self._by_name(document)
            items = list(document.values())
            if len(items) < self.width:
                raise RowError(
                    f"missing key {self.features[0].name!r} (or give the model's "
                    f"{self.width} values by position; the object has {len(items)})"
                )
            return kind, True, self._by_position(items, "the object")
        kind_name = "null" if document is None else type(document).__name__
        raise RowError(f"a row must be a JSON array or object, not {kind_name}")

    def _by_position(self, items: list[Any], what: str) -> list[list[Any]]:
        if len(items) < self.width:
            raise RowError(
                f"{what} has {len(items)} values, the model takes {self.width}"
            )
        for index, item in enumerate(items[: self.width]):
            if isinstance(item, list):
                raise RowError(f"value {index} is {show(item)}, not a single value")
        result: list[list[Any]] = []
        index = 0
        for feature in self.features:
            result.append(items[index : index + feature.size])
            index += feature.size
        return result

    def _by_name(self, document: dict[str, Any]) -> list[list[Any]]:
        result: list[list[Any]] = []
        for feature in self.features:
            if feature.name not in document:
                raise RowError(f"missing key {feature.name!r}")
            items = _flatten(document[feature.name])
            if items is None:
                raise RowError(
                    f"key {feature.name!r} is nested more than {MAX_NESTING} lists "
                    f"deep, input expects {feature.size} values"
                )
            if len(items) != feature.size:
                raise RowError(
                    f"key {feature.name!r} has {len(items)} values, "
                    f"input expects {feature.size}"
                )
            result.append(items)
        return result

    def _refusal(self, by_position: bool, feature: int, error: ValueRefused) -> str:
        value = (error.position or (0,))[0]
        named = self.features[feature]
        if by_position:
            offset = sum(f.size for f in self.features[:feature])
            what = f"value {offset + value}"
        elif named.size == 1:
            what = f"key {named.name!r}"
        else:
            what = f"{named.name}[{value}]"
        return f"{what} is {error.shown}, {error.problem}"


def _flatten(value: Any) -> list[Any] | None:
    """Nested lists' values in order; None when nested deeper than MAX_NESTING.
    Without recursion: a row nested thousands deep is one rejected row."""
    flat: list[Any] = []
    stack = [iter([value])]
    end = object()
    while stack:
        item = next(stack[-1], end)
        if item is end:
            stack.pop()
        elif isinstance(item, list):
            if len(stack) > MAX_NESTING:
                return None
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


# -- formatting cells: numbers and labels as NUL-padded byte matrices --------------
#
# A column of m cells is an (m, width) uint8 matrix, each cell left- or right-
# aligned and padded with NUL bytes. A row's suffix is its cells and separators
# side by side; deleting every NUL afterwards leaves exactly the text. NUL cannot
# occur in the text itself: labels are sanitised and numbers are digits.


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


# -- rows out: suffix templates ----------------------------------------------------


@dataclass(frozen=True)
class Renderer:
    """Appends the prediction fields to rows in one format.

    CSV rows get ``,cell`` per column; JSON arrays ``,value`` per value before the
    closing bracket; JSON objects ``,"key":value`` (a list for a multi-value
    field, an object keyed by class for a classifier's probabilities when the
    version has labels) before the closing brace, with keys prefixed
    ``predicted_`` on rows whose own keys would clash.
    """

    fields: tuple[Field, ...]
    fmt: str
    prefix: str = ""

    @property
    def csv_columns(self) -> list[str]:
        return [self.prefix + column for f in self.fields for column in f.columns]

    def csv_header(self, header: bytes) -> bytes:
        """The output header: the input's, then the prediction columns."""
        columns = ",".join(quote_csv(column) for column in self.csv_columns)
        return header + b"," + columns.encode() + b"\n"

    def suffixes(
        self, outputs: Mapping[str, np.ndarray], kinds: np.ndarray | None
    ) -> list[bytes]:
        """Per row, the bytes that follow its head: cells, closing bracket, newline."""
        cells: list[np.ndarray] = []
        rows = 0
        for f in self.fields:
            block = f.values(outputs)
            rows, columns = block.shape
            flat = block.ravel()  # all of a field's columns formatted at once
            matrix = (
                format_labels(flat, f.labels, self.fmt)
                if f.is_label
                else format_cells(flat, self.fmt)
            ).reshape(rows, columns, -1)
            cells.extend(matrix[:, column] for column in range(columns))
        if self.fmt == CSV or kinds is None:
            return _render(self._template(ARRAY_ROW), cells, rows)
        result: list[bytes] = [b""] * rows
        for kind in np.unique(kinds).tolist():
            where = np.flatnonzero(kinds == kind)
            subset = [matrix[where] for matrix in cells]
            rendered = _render(self._template(kind), subset, where.size)
            for position, text in zip(where.tolist(), rendered, strict=True):
                result[position] = text
        return result

    def _template(self, kind: int) -> list[bytes | int]:
        """Literal bytes and cell indices that make up one row's suffix."""
        template: list[bytes | int] = []
        index = 0
        for f in self.fields:
            count = len(f.columns)
            if self.fmt == CSV or kind == ARRAY_ROW:
                for _ in range(count):
                    template += [b",", index]
                    index += 1
                continue
            key = ("predicted_" if kind == OBJECT_ROW_PREFIXED else "") + f.key
            template.append(b"," + json.dumps(key).encode() + b":")
            if f.keys is not None:
                for position, name in enumerate(f.keys):
                    opening = b"," if position else b"{"
                    template += [opening + json.dumps(name).encode() + b":", index]
                    index += 1
                template.append(b"}")
            elif f.as_list:
                for position in range(count):
                    template += [b"," if position else b"[", index]
                    index += 1
                template.append(b"]")
            else:
                template.append(index)
                index += 1
        closing = {ARRAY_ROW: b"]\n"}.get(kind, b"}\n")
        template.append(b"\n" if self.fmt == CSV else closing)
        return template


def _render(
    template: list[bytes | int], cells: list[np.ndarray], rows: int
) -> list[bytes]:
    widths = [
        len(piece) if isinstance(piece, bytes) else cells[piece].shape[1]
        for piece in template
    ]
    matrix = np.empty((rows, sum(widths)), np.uint8)
    column = 0
    for piece, width in zip(template, widths, strict=True):
        target = matrix[:, column : column + width]
        if isinstance(piece, bytes):
            target[:] = np.frombuffer(piece, np.uint8)
        else:
            target[:] = cells[piece]
        column += width
    text = matrix.tobytes()
    if b"\0" in text:
        text = text.replace(b"\0", b"")
    return text.splitlines(keepends=True)


def assemble(heads: list[bytes], suffixes: list[bytes]) -> bytes:
    """Output rows: each head followed by its suffix."""
    parts: list[bytes] = [b""] * (2 * len(heads))
    parts[0::2] = heads
    parts[1::2] = suffixes
    return b"".join(parts)


def make_renderer(
    fields: tuple[Field, ...], fmt: str, input_columns: Sequence[str] = ()
) -> Renderer:
    """A renderer whose CSV columns do not clash with the input's (else they all
    get the ``predicted_`` prefix)."""
    renderer = Renderer(fields, fmt)
    taken = {column.strip() for column in input_columns}
    if fmt == CSV and taken.intersection(renderer.csv_columns):
        renderer = Renderer(fields, fmt, prefix="predicted_")
    return renderer
