"""The rows of a file through the model: blocks -> records -> parse -> predict ->
format, with the counts and the prediction columns as they come out."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.batch.keys import BatchKey
from chalicelib.batch.s3io import Prefetch, SourceStream, StreamingUpload
from chalicelib.batch.tables.chunks import ParsedChunk
from chalicelib.batch.tables.columns import features_of, open_widths, output_fields
from chalicelib.batch.tables.delimited import CsvTable
from chalicelib.batch.tables.formats import CSV, JSONL
from chalicelib.batch.tables.jsonlines import JsonLinesTable
from chalicelib.batch.tables.records import MAX_RECORD_BYTES, RecordSplitter
from chalicelib.batch.tables.render import Renderer, make_renderer
from chalicelib.errors import BatchFileError
from chalicelib.predictor import Target

if TYPE_CHECKING:
    from chalicelib.batch.record import Counts
    from chalicelib.config import Settings
    from chalicelib.predictor import Predictor

_GZIP_MAGIC = b"\x1f\x8b"


class Host(Protocol):
    """What a pipeline needs from the job (or shard) that runs it."""

    settings: Settings
    predictor: Predictor
    run_id: str
    counts: Counts

    def check_time(self) -> None: ...

    def report_progress(self) -> None:
        """Say how far the work is (at a bounded rate: called for every chunk)."""


@dataclass(frozen=True)
class Header:
    """A CSV file's header, for a pipeline that starts after it (a shard)."""

    line: bytes
    lines: int


class Pipeline:
    """The chunks of one file through the model: parse, predict, format, write."""

    def __init__(
        self,
        job: Host,
        batch_key: BatchKey,
        target: Target,
        *,
        at_start: bool = True,
        at_end: bool = True,
        header: Header | None = None,
    ) -> None:
        """A pipeline over the whole file, or over a shard of it: one that is not
        ``at_start`` begins on a record boundary, after the CSV ``header`` (and
        writes no output header); one that is not ``at_end`` must end on one (a
        record left unfinished there is an error, not the file's last line)."""
        self.job = job
        self.at_start = at_start
        self.at_end = at_end
        self.counts = job.counts
        self.fmt = batch_key.fmt
        self.target = target
        # The version's manifest (its signature), not the job record.
        signed = target.manifest
        self.features = features_of(signed)
        fields = output_fields(signed)
        self.requested = list(dict.fromkeys(field.output for field in fields))
        self.open_widths = [
            name for name in open_widths(signed) if name in self.requested
        ]
        self.table: CsvTable | JsonLinesTable | None = None
        if self.fmt == JSONL:
            keys = frozenset(field.key for field in fields)
            self.table = JsonLinesTable(self.features, keys)
        self.renderer: Renderer | None = None
        self.header = b""
        self.line = 1
        if not at_start and self.fmt == CSV:
            assert header is not None, "a CSV shard needs the file's header"
            self._read_header(header.line, header.lines)
        # Lines of records (not the header) read: where the next shard's start.
        self.data_lines = 0
        self.widths: dict[str, int] = {}
        self.looks_gzip = False

    def run(
        self, stream: SourceStream, out: StreamingUpload, errors: StreamingUpload
    ) -> None:
        """Read, parse, and predict and write, each on its own thread."""
        blocks = Prefetch(stream.blocks(), depth=2, name="turnout-batch-read")
        chunks = Prefetch(self._parse(blocks), depth=2, name="turnout-batch-parse")
        try:
            for parsed in chunks:
                self._predict(parsed, out, errors)
        finally:
            chunks.close()
            blocks.close()
        if self.renderer is None:
            self._start_output(out, {})

    def columns(self) -> list[str]:
        """The prediction columns (CSV) or keys (JSON) added to each row."""
        if self.renderer is None:
            return []
        if self.fmt == CSV:
            return self.renderer.csv_columns
        return [field.key for field in self.renderer.fields]

    def _parse(self, blocks: Iterable[bytes]) -> Iterator[ParsedChunk]:
        """The file's chunks of rows, parsed (the producer thread's work)."""
        csv = self.fmt == CSV
        splitter = RecordSplitter(
            self.job.settings.batch_rows_per_chunk,
            quoted=csv,
            header=csv and self.table is None,
            max_record_bytes=MAX_RECORD_BYTES,
            at_start=self.at_start,
        )
        row = 1
        first = True
        for block in blocks:
            if first:
                self.looks_gzip = block.startswith(_GZIP_MAGIC)
                first = False
            for chunk in splitter.feed(block):
                table = self._table(splitter)
                self._check_text(chunk)
                parsed = table.parse(chunk, row, self.line)
                row += parsed.rows
                self.line += parsed.lines
                self.data_lines += parsed.lines
                yield parsed
        for chunk in splitter.close():
            if not self.at_end:
                raise BatchFileError(
                    f"a record does not end where this shard does (line {self.line} "
                    "on): a quoted CSV field holds a line break, which a byte range "
                    "cannot tell from a line end; upload the file gzip-compressed "
                    "(.csv.gz) to process it in one invocation"
                )
            table = self._table(splitter)
            self._check_text(chunk)
            parsed = table.parse(chunk, row, self.line)
            self.line += parsed.lines
            self.data_lines += parsed.lines
            yield parsed
        self._table(splitter)  # a header without rows still needs one

    def _table(self, splitter: RecordSplitter) -> CsvTable | JsonLinesTable:
        if self.table is None:
            if splitter.header is None:
                raise BatchFileError(
                    "the file is empty: a CSV file starts with a header line"
                )
            self._read_header(splitter.header, splitter.header_lines)
        assert self.table is not None
        return self.table

    def _read_header(self, line: bytes, lines: int) -> None:
        self.header = line
        self._check_text(line)
        self.table = CsvTable.from_header(line, self.features)
        self.line = 1 + lines

    def _predict(
        self,
        parsed: ParsedChunk,
        out: StreamingUpload,
        errors: StreamingUpload,
    ) -> None:
        self.job.check_time()
        self.counts.read += parsed.rows
        if parsed.rejections:
            self.counts.rejected += len(parsed.rejections)
            errors.write(b"".join(item.to_json() for item in parsed.rejections))
        if not parsed.accepted:
            return
        prediction = self.job.predictor.run(
            self.target, parsed.inputs, outputs=self.requested
        )
        outputs = prediction.outputs
        renderer = self.renderer or self._start_output(out, outputs)
        self._check_widths(outputs)
        out.write(renderer.rows(parsed.heads, outputs, parsed.kinds))
        self.counts.predicted += parsed.accepted
        self.job.report_progress()

    def _start_output(self, out: StreamingUpload, outputs: dict[str, Any]) -> Renderer:
        """Fix the prediction columns (from the first prediction, for outputs whose
        width the signature leaves open) and write the CSV header."""
        self.widths = (
            {name: _row_width(outputs[name]) for name in self.open_widths}
            if outputs
            else {}
        )
        fields = output_fields(self.target.manifest, self.widths)
        header = self.table.header if isinstance(self.table, CsvTable) else ()
        self.renderer = make_renderer(fields, self.fmt, header)
        if self.fmt == CSV and self.at_start:
            out.write(self.renderer.csv_header(self.header))
        return self.renderer

    def _check_widths(self, outputs: dict[str, Any]) -> None:
        for name, width in self.widths.items():
            if _row_width(outputs[name]) != width:
                raise BatchFileError(
                    f"output {name!r} has {_row_width(outputs[name])} values per "
                    f"row here, {width} in the first rows: the columns cannot change"
                )

    def _check_text(self, data: bytes) -> None:
        if data.isascii():
            return
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = self.line + data.count(b"\n", 0, error.start)
            hint = " (it looks gzip-compressed: name it .gz)" if self.looks_gzip else ""
            raise BatchFileError(
                f"the file is not UTF-8: byte 0x{data[error.start]:02x} on line "
                f"{line} is not valid UTF-8{hint}"
            ) from None


def _row_width(array: Any) -> int:
    """Values per row of an output array."""
    return math.prod(int(dimension) for dimension in array.shape[1:])
