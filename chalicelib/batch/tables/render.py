"""Output rows (pure): each input row's bytes followed by its prediction cells,
laid out by a per-format suffix template."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from chalicelib.batch.tables.cells import format_cells, format_labels, quote_csv
from chalicelib.batch.tables.chunks import ARRAY_ROW, OBJECT_ROW_PREFIXED, Lines
from chalicelib.batch.tables.columns import Field
from chalicelib.batch.tables.formats import CSV


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

    def rows(
        self,
        heads: Sequence[bytes],
        outputs: Mapping[str, np.ndarray],
        kinds: np.ndarray | None,
    ) -> bytes:
        """Output rows: each head followed by its suffix (``suffixes``). A chunk's
        lines (``Lines``) are laid out with their suffixes in one byte matrix."""
        if (
            isinstance(heads, Lines)
            and (self.fmt == CSV or kinds is None)
            and b"\0" not in heads.text
        ):
            cells, rows = self._cells(outputs)
            suffixes = _suffix_matrix(self._template(ARRAY_ROW), cells, rows)
            laid_out = _lay_out(heads, suffixes)
            if laid_out is not None:
                return laid_out
        return assemble(heads, self.suffixes(outputs, kinds))

    def suffixes(
        self, outputs: Mapping[str, np.ndarray], kinds: np.ndarray | None
    ) -> list[bytes]:
        """Per row, the bytes that follow its head: cells, closing bracket, newline."""
        cells, rows = self._cells(outputs)
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

    def _cells(self, outputs: Mapping[str, np.ndarray]) -> tuple[list[np.ndarray], int]:
        """Every prediction cell, one NUL-padded matrix per column, and the rows."""
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
        return cells, rows

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
    text = _suffix_matrix(template, cells, rows).tobytes()
    if b"\0" in text:
        text = text.replace(b"\0", b"")
    return text.splitlines(keepends=True)


def _suffix_matrix(
    template: list[bytes | int], cells: list[np.ndarray], rows: int
) -> np.ndarray:
    """The suffixes as a NUL-padded (rows, width) matrix."""
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
    return matrix


# Padding a chunk's lines to its longest costs memory: past this many times the
# chunk's own size, its rows are joined one by one instead.
_MAX_PADDING = 4


def _lay_out(heads: Lines, suffixes: np.ndarray) -> bytes | None:
    """Each line of the chunk, then its suffix, as bytes: one (rows, longest line
    + suffix width) matrix without its NUL padding. None when the lines' lengths
    vary too much for that to be cheap."""
    rows, suffix_width = suffixes.shape
    lengths = heads.ends - heads.starts
    longest = int(lengths.max()) if rows else 0
    size = len(heads.text) + suffixes.size
    if rows * (longest + suffix_width) > _MAX_PADDING * size:
        return None
    # Row i of the windows is the text from byte i on: a row per line's start.
    text = np.frombuffer(heads.text + bytes(longest), np.uint8)
    windows = np.lib.stride_tricks.sliding_window_view(text, longest)
    matrix = np.empty((rows, longest + suffix_width), np.uint8)
    matrix[:, :longest] = windows[heads.starts]
    matrix[:, :longest][np.arange(longest) >= lengths[:, None]] = 0
    matrix[:, longest:] = suffixes
    laid_out: bytes = matrix[matrix != 0].tobytes()
    return laid_out


def assemble(heads: Sequence[bytes], suffixes: list[bytes]) -> bytes:
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
