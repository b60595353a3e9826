"""Where a file is cut, how shard outputs make S3 parts, and how rejected rows are
renumbered (pure, no I/O: the file is bytes in memory)."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.batch.fanout.plan import (
    MAX_SHARDS,
    Piece,
    Shard,
    cut_shards,
    plan_parts,
    renumber_rejection,
)
from chalicelib.batch.tables.chunks import Rejection
from chalicelib.errors import BatchFileError


def cut(data: bytes, shard_bytes: int, data_start: int = 0) -> list[Shard]:
    reads: list[tuple[int, int]] = []

    def read(start: int, end: int) -> bytes:
        reads.append((start, end))
        return data[start:end]

    return cut_shards(
        len(data),
        data_start=data_start,
        shard_bytes=shard_bytes,
        read=read,
        max_record_bytes=1000,
    )


def test_cuts_fall_just_after_a_newline_and_cover_the_file() -> None:
    data = b"h\n" + b"".join(b"row-%03d\n" % i for i in range(100))

    shards = cut(data, 100, data_start=2)

    assert shards[0] == Shard(0, 0, shards[1].start)
    assert shards[-1].end == len(data)
    for before, after in itertools.pairwise(shards):
        assert before.end == after.start
        assert data[after.start - 1 : after.start] == b"\n"
        assert after.end - after.start >= 100 or after is shards[-1]
    assert len(shards) == len(data) // 100


def test_the_first_shard_holds_the_whole_header() -> None:
    header = b"a," * 200 + b"b\n"
    data = header + b"1,2\n" * 10

    shards = cut(data, 8, data_start=len(header))

    assert shards[0].end > len(header)
    assert data[shards[0].end - 1 : shards[0].end] == b"\n"


def test_a_file_no_larger_than_a_shard_is_one_shard() -> None:
    data = b"h\n1\n2\n"

    assert cut(data, len(data)) == [Shard(0, 0, len(data))]
    assert cut(data, 100) == [Shard(0, 0, len(data))]


def test_a_file_without_a_line_end_after_the_cut_is_one_shard() -> None:
    data = b"h\n" + b"x" * 500

    assert cut(data, 10, data_start=2) == [Shard(0, 0, len(data))]


def test_a_record_longer_than_the_limit_is_refused_where_it_is() -> None:
    data = b"h\n" + b"x" * (200 * 1024) + b"\n1\n"

    with pytest.raises(BatchFileError) as refused:
        cut(data, 10, data_start=2)

    assert str(refused.value) == (
        "a record is longer than 1000 bytes (no line end found after byte 20)"
    )


def test_shards_grow_so_that_there_are_never_more_than_s3_allows() -> None:
    data = b"1\n" * (MAX_SHARDS * 2)

    shards = cut(data, 1)

    assert len(shards) <= MAX_SHARDS
    assert shards[-1].end == len(data)


@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=60),
    st.integers(min_value=1, max_value=200),
)
def test_any_cut_is_line_aligned_and_loses_no_byte(
    lines: list[bytes], shard_bytes: int
) -> None:
    data = b"".join(line + b"\n" for line in lines)

    shards = cut(data, shard_bytes) if data else []

    assert b"".join(data[s.start : s.end] for s in shards) == data
    assert all(data[s.end - 1 : s.end] == b"\n" for s in shards)
    assert [s.index for s in shards] == list(range(len(shards)))


# -- parts of the assembled output --------------------------------------------


def test_large_outputs_are_copied_whole_and_small_ones_joined() -> None:
    parts = plan_parts([10, 2, 2, 10, 3], min_part=5, max_part=100)

    assert parts == [
        [Piece(0, 0, 10)],
        [Piece(1, 0, 2), Piece(2, 0, 2), Piece(3, 0, 1)],
        [Piece(3, 1, 10)],
        [Piece(4, 0, 3)],
    ]


def test_an_output_over_the_part_maximum_is_copied_in_ranges() -> None:
    assert plan_parts([25], min_part=5, max_part=10) == [
        [Piece(0, 0, 10)],
        [Piece(0, 10, 20)],
        [Piece(0, 20, 25)],
    ]


def test_empty_outputs_make_no_part() -> None:
    assert plan_parts([0, 0], min_part=5) == []
    assert plan_parts([0, 3, 0], min_part=5) == [[Piece(1, 0, 3)]]


@given(
    st.lists(st.integers(min_value=0, max_value=40), max_size=30),
    st.integers(min_value=1, max_value=12),
)
def test_every_part_but_the_last_is_within_s3_s_bounds_and_in_order(
    sizes: list[int], min_part: int
) -> None:
    max_part = 3 * min_part

    parts = plan_parts(sizes, min_part=min_part, max_part=max_part)

    pieces = [piece for part in parts for piece in part]
    assert [(p.source, p.start, p.end) for p in pieces] == [
        (p.source, p.start, p.end)
        for p in sorted(pieces, key=lambda p: (p.source, p.start))
    ]
    for source, size in enumerate(sizes):
        covered = [(p.start, p.end) for p in pieces if p.source == source]
        assert sum(end - start for start, end in covered) == size
    for part in parts[:-1]:
        assert min_part <= sum(p.size for p in part) <= max_part
    # What is read rather than copied stays under one part per joined part.
    for part in parts:
        if len(part) > 1:
            assert sum(p.size for p in part) <= min_part


def test_a_rejected_row_is_renumbered_over_the_whole_file() -> None:
    line = Rejection(3, 5, "5.1,abc,é", "column 'x' is 'abc', not a number")

    renumbered = renumber_rejection(line.to_json(), 1000, 1010)

    assert (
        renumbered
        == Rejection(
            1003, 1015, "5.1,abc,é", "column 'x' is 'abc', not a number"
        ).to_json()
    )
    assert json.loads(renumbered)["row"] == 1003
