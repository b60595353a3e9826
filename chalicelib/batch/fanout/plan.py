"""Pure rules of a fanned-out job: whether a file fans out, where it is cut into
shards (through a ranged-read function it is given), how the shards' counts add
up, how their outputs make S3 parts, and how a shard's rejected rows are numbered
over the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from chalicelib.batch.keys import BatchKey, ShardDone
from chalicelib.batch.pipeline import Header
from chalicelib.batch.record import Progress, RowCounts
from chalicelib.batch.tables.chunks import Rejection
from chalicelib.batch.tables.formats import CSV
from chalicelib.batch.tables.records import (
    MAX_HEADER_BYTES,
    MAX_RECORD_BYTES,
    RecordSplitter,
)
from chalicelib.clock import iso_timestamp
from chalicelib.config import Settings
from chalicelib.errors import BatchFileError

# S3 multipart rules: every part but the last is at least 5 MiB, none over 5 GiB,
# at most 10,000 parts (so at most 10,000 shards: each gives at least one part).
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PART_BYTES = 5 * 1024 * 1024 * 1024
MAX_SHARDS = 10_000
# How much is read around a nominal cut to find the line end after it.
_WINDOW_BYTES = 64 * 1024
_BOM = b"\xef\xbb\xbf"


def wants_fan_out(size: int, batch_key: BatchKey, settings: Settings) -> bool:
    """Whether a file is a candidate for fan-out: uncompressed (a gzip stream cannot
    be entered mid-way) and larger than a shard."""
    return 0 < settings.batch_shard_bytes < size and not batch_key.compressed


@dataclass(frozen=True)
class Shard:
    """Bytes ``start`` (inclusive) to ``end`` (exclusive) of the file: whole lines."""

    index: int
    start: int
    end: int


def cut_shards(
    size: int,
    *,
    data_start: int,
    shard_bytes: int,
    read: Callable[[int, int], bytes],
    max_record_bytes: int,
) -> list[Shard]:
    """Cut a file of ``size`` bytes into shards of about ``shard_bytes`` each, every
    cut just after a newline (found with ``read(start, end)``, a ranged read).

    The first shard starts at 0 and holds the header, which ends at ``data_start``;
    each later one starts on a line. Shards are made larger when the file would
    need more than MAX_SHARDS. A newline inside a quoted CSV field cannot be told
    from a line end here: the shard before such a cut finds out (it ends inside a
    record) and the job fails saying so. BatchFileError when no line end is found
    within ``max_record_bytes`` of a cut.
    """
    shard_bytes = max(1, shard_bytes, math.ceil(size / MAX_SHARDS))
    starts = [0]
    nominal = max(shard_bytes, data_start + 1)
    while nominal < size:
        cut = _line_end_after(nominal - 1, size, read, max_record_bytes)
        if cut is None:
            break
        starts.append(cut)
        nominal = cut + shard_bytes
    ends = [*starts[1:], size]
    return [
        Shard(index, start, end)
        for index, (start, end) in enumerate(zip(starts, ends, strict=True))
    ]


def _line_end_after(
    position: int,
    size: int,
    read: Callable[[int, int], bytes],
    max_record_bytes: int,
) -> int | None:
    """The offset just after the first newline at or after ``position``; None when
    that is the end of the file (or there is none)."""
    start = position
    while start < size:
        if start - position > max_record_bytes:
            raise BatchFileError(
                f"a record is longer than {max_record_bytes} bytes (no line end "
                f"found after byte {position})"
            )
        end = min(size, start + _WINDOW_BYTES)
        found = read(start, end).find(b"\n")
        if found >= 0:
            cut = start + found + 1
            return cut if cut < size else None
        start = end
    return None


def read_header(
    read: Callable[[int, int], bytes], size: int
) -> tuple[Header | None, int]:
    """A CSV file's header and the offset of its first data byte (after the
    header's line end), from ranged reads of its start. (None, size) when the file
    is all header."""
    head = read(0, min(size, MAX_HEADER_BYTES + len(_BOM) + 2))
    splitter = RecordSplitter(
        1, quoted=True, header=True, max_record_bytes=MAX_RECORD_BYTES
    )
    splitter.feed(head)
    if splitter.header is None:
        return None, size
    end = len(_BOM) if head.startswith(_BOM) else 0
    end += len(splitter.header)
    end += head[end : end + 1] == b"\r"
    return Header(splitter.header, splitter.header_lines), end + 1


def plan_shards(
    read: Callable[[int, int], bytes],
    size: int,
    batch_key: BatchKey,
    settings: Settings,
) -> tuple[list[Shard], int]:
    """The shards of an uncompressed file of ``size`` bytes (read with ``read``)
    and where its data starts (after the CSV header); one shard when the file is
    no larger than a shard or has no line end to cut at."""
    data_start = 0
    if batch_key.fmt == CSV:
        _, data_start = read_header(read, size)
    shards = cut_shards(
        size,
        data_start=data_start,
        shard_bytes=settings.batch_shard_bytes,
        read=read,
        max_record_bytes=MAX_RECORD_BYTES,
    )
    return shards, data_start


def summed_rows(done: list[ShardDone]) -> RowCounts:
    """The rows of the shards ``done``, added up."""
    return {
        "read": sum(marker.read for marker in done),
        "predicted": sum(marker.predicted for marker in done),
        "rejected": sum(marker.rejected for marker in done),
    }


def progress(done: list[ShardDone], previous: Progress, now: datetime) -> Progress:
    """A running fanned-out job's progress: shards, bytes and rows done."""
    return {
        "shards_done": len(done),
        "shards": previous["shards"],
        "bytes_done": sum(marker.size for marker in done),
        "bytes": previous["bytes"],
        "rows_done": sum(marker.read for marker in done),
        "updated_at": iso_timestamp(now),
    }


@dataclass(frozen=True)
class Piece:
    """Bytes ``start`` to ``end`` (exclusive) of source ``source``."""

    source: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def plan_parts(
    sizes: list[int],
    *,
    min_part: int,
    max_part: int = MAX_PART_BYTES,
) -> list[list[Piece]]:
    """The parts of an object made of sources of ``sizes`` bytes, in order.

    A part of one piece is copied server-side (UploadPartCopy); a part of several
    pieces is made of small sources (and at most ``min_part`` bytes of a large
    one), read and uploaded. Every part but the last holds at least ``min_part``
    bytes and none more than ``max_part``.
    """
    parts: list[list[Piece]] = []
    group: list[Piece] = []
    grouped = 0
    for source, size in enumerate(sizes):
        position = 0
        while position < size:
            if not group and size - position >= min_part:
                length = min(size - position, max_part)
                parts.append([Piece(source, position, position + length)])
                position += length
                continue
            take = min(min_part - grouped, size - position)
            group.append(Piece(source, position, position + take))
            grouped += take
            position += take
            if grouped >= min_part:
                parts.append(group)
                group, grouped = [], 0
    if group:
        parts.append(group)
    return parts


def renumber_rejection(line: bytes, rows_before: int, lines_before: int) -> bytes:
    """A shard's errors-report line with its row and line counted over the file.

    The shard numbered its rows from 1 and its lines as if its records followed
    the header directly; the rows and lines of the shards before it are added.
    """
    rejection = Rejection(**json.loads(line))
    return replace(
        rejection,
        row=rejection.row + rows_before,
        line=rejection.line + lines_before,
    ).to_json()
