"""Records cut from a byte stream (pure): whole-record chunks, the quote state
carried across blocks, the header kept apart, and the limits that bound a record's
(and so a chunk's) memory."""

from __future__ import annotations

import numpy as np

from chalicelib.errors import BatchFileError

BOM = b"\xef\xbb\xbf"
NEWLINE, _QUOTE = 10, 34
# A record without a line end in this many bytes is not a table's row; a header
# longer, or with more columns, than these is not a table's header. Parsing costs
# about ten times a record's size, so these bound a chunk's memory too.
MAX_RECORD_BYTES = 8 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024
MAX_COLUMNS = 65_536


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
            if len(block) < len(BOM) and BOM.startswith(block):
                self._keep(block)
                return []
            self._started = True
            block = block.removeprefix(BOM)
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
            rest = rest.removeprefix(BOM)
        if self._wants_header and self.header is None:
            self._set_header(rest)
            return []
        return [rest + b"\n"]

    def _record_ends(self, block: bytes) -> np.ndarray:
        """Offsets in ``block`` of the newlines that end a record; updates the
        quote state. Quotes are counted modulo 256 (their parity is all that
        matters), so the scan costs two bytes per byte of the block."""
        buffer = np.frombuffer(block, np.uint8)
        ends = np.flatnonzero(buffer == NEWLINE)
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
