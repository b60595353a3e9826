"""Cutting a byte stream into records: the same records whatever the blocks, and
bounded memory for hostile shapes (an unclosed quote, a huge header)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.batch.tables.records import RecordSplitter
from chalicelib.errors import BatchFileError


def reference_records(data: bytes) -> list[bytes]:
    """The records of ``data``, one byte at a time: a newline outside quotes ends
    one; the last may lack its newline."""
    records, start, quoted = [], 0, False
    for index, byte in enumerate(data):
        if byte == ord('"'):
            quoted = not quoted
        elif byte == ord("\n") and not quoted:
            records.append(data[start : index + 1])
            start = index + 1
    if start < len(data):
        records.append(data[start:] + b"\n")
    return records


def split_records(data: bytes, blocks: list[int], rows: int) -> list[bytes]:
    """The chunks of ``data`` fed in blocks of the given sizes (then the rest)."""
    splitter = RecordSplitter(
        rows, quoted=True, header=False, max_record_bytes=len(data) + 1
    )
    chunks: list[bytes] = []
    start = 0
    for size in [*blocks, len(data)]:
        chunks += splitter.feed(data[start : start + size])
        start += size
    return chunks + splitter.close()


def boundaries(pieces: list[bytes]) -> set[int]:
    ends, total = set(), 0
    for piece in pieces:
        total += len(piece)
        ends.add(total)
    return ends


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b",", b'"', b"\n", b"\r", b"1"])).map(
        b"".join
    ),
    blocks=st.lists(st.integers(1, 7), max_size=20),
    rows=st.integers(1, 4),
)
def test_chunks_are_whole_records_whatever_the_block_boundaries(
    data: bytes, blocks: list[int], rows: int
) -> None:
    records = reference_records(data)
    chunks = split_records(data, blocks, rows)
    assert b"".join(chunks) == b"".join(records)
    assert boundaries(chunks) <= boundaries(records)
    assert all(len(reference_records(chunk)) <= rows for chunk in chunks)


def test_a_quote_left_open_in_one_block_holds_newlines_in_the_next() -> None:
    splitter = RecordSplitter(10, quoted=True, header=False, max_record_bytes=100)
    assert splitter.feed(b'1,"a\n') == []
    assert splitter.feed(b"b\nc") == []
    assert splitter.feed(b'"\n2,d\n') == [b'1,"a\nb\nc"\n2,d\n']


def test_an_unclosed_quote_is_named_when_its_record_grows_too_long() -> None:
    splitter = RecordSplitter(10, quoted=True, header=True, max_record_bytes=20)
    assert splitter.feed(b'a,b\n1,"x\n') == []
    with pytest.raises(BatchFileError) as caught:
        for _ in range(10):
            splitter.feed(b"2,3\n")
    assert str(caught.value) == (
        "a record is longer than 20 bytes (no line end found: a quoted field is "
        "not closed)"
    )


def test_a_header_over_its_byte_limit_is_refused_before_its_end() -> None:
    splitter = RecordSplitter(
        10, quoted=True, header=True, max_record_bytes=1000, max_header_bytes=8
    )
    splitter.feed(b"abcd,")
    with pytest.raises(BatchFileError) as caught:
        splitter.feed(b"efgh")
    assert str(caught.value) == (
        "the header line is longer than 8 bytes: a CSV file starts with a line of "
        "column names"
    )


def test_a_header_with_too_many_columns_is_refused() -> None:
    splitter = RecordSplitter(
        10, quoted=True, header=True, max_record_bytes=1000, max_columns=3
    )
    assert splitter.feed(b"a,b,c\n1,2,3\n") == [b"1,2,3\n"]
    splitter = RecordSplitter(
        10, quoted=True, header=True, max_record_bytes=1000, max_columns=3
    )
    with pytest.raises(BatchFileError) as caught:
        splitter.feed(b"a,b,c,d\n1,2,3,4\n")
    assert str(caught.value) == "the header has more than 3 columns"


def test_a_header_without_newline_is_bounded_too() -> None:
    splitter = RecordSplitter(
        10, quoted=False, header=True, max_record_bytes=1000, max_columns=2
    )
    splitter.feed(b"a,b,c")
    with pytest.raises(BatchFileError, match="more than 2 columns"):
        splitter.close()


def split(
    data: bytes, *, rows: int = 2, block: int = 3, header: bool = True
) -> tuple[bytes | None, list[bytes]]:
    splitter = RecordSplitter(rows, quoted=True, header=header, max_record_bytes=1000)
    chunks: list[bytes] = []
    for start in range(0, len(data), block):
        chunks += splitter.feed(data[start : start + block])
    chunks += splitter.close()
    return splitter.header, chunks


def test_chunks_hold_whole_records_and_at_most_the_row_count() -> None:
    header, chunks = split(b"h1,h2\r\n1,2\n3,4\n5,6\n7,8")
    assert header == b"h1,h2"
    assert b"".join(chunks) == b"1,2\n3,4\n5,6\n7,8\n"
    assert all(chunk.endswith(b"\n") and chunk.count(b"\n") <= 2 for chunk in chunks)


def test_a_byte_order_mark_is_dropped_even_when_split_across_blocks() -> None:
    header, chunks = split(b"\xef\xbb\xbfa,b\n1,2\n", block=1)
    assert header == b"a,b"
    assert chunks == [b"1,2\n"]


def test_a_newline_inside_quotes_does_not_end_a_record() -> None:
    _, chunks = split(b'a,b\n1,"x\ny"\n2,z\n', rows=1, block=100)
    assert chunks == [b'1,"x\ny"\n', b"2,z\n"]


def test_a_header_without_rows_or_newline_is_still_a_header() -> None:
    assert split(b"a,b") == (b"a,b", [])
    assert split(b"") == (None, [])


def test_a_record_longer_than_the_limit_is_refused() -> None:
    splitter = RecordSplitter(10, quoted=False, header=False, max_record_bytes=10)
    with pytest.raises(BatchFileError, match="a record is longer than 10 bytes"):
        splitter.feed(b"x" * 11)
