"""The vectorised CSV paths against the careful ones (pure): the decimal reader
reads what Python's float reads, to the sign of zero, and a chunk's rows laid out
in one matrix are byte for byte the rows the renderer joins one by one."""

from __future__ import annotations

import io
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.batch.tables.chunks import Lines
from chalicelib.batch.tables.columns import Field, output_fields
from chalicelib.batch.tables.delimited import CsvTable, _decimal_columns
from chalicelib.batch.tables.formats import CSV
from chalicelib.batch.tables.render import assemble, make_renderer
from tests.unit.batch_tables_support import IRIS, IRIS_FEATURES, LABELS, manifest

DIGITS = st.text("0123456789", max_size=12)
DECIMAL = st.builds(
    lambda sign, whole, point, fraction: sign + whole + point + fraction,
    st.sampled_from(["", "-"]),
    DIGITS,
    st.sampled_from(["", "."]),
    DIGITS,
)
CELL = st.one_of(
    DECIMAL,
    st.sampled_from(["1e5", "+1", " 2", "inf", "nan", "0x1", "--1", "1-", "1..2"]),
)


def lines_of(chunk: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    buffer = np.frombuffer(chunk, np.uint8)
    ends = np.flatnonzero(buffer == 10)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return buffer, starts, ends, np.flatnonzero(buffer == 44)


def read(cells: list[list[str]], positions: tuple[int, ...]) -> np.ndarray | None:
    chunk = "".join(",".join(row) + "\n" for row in cells).encode()
    return _decimal_columns(*lines_of(chunk), positions)


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.lists(st.lists(CELL, min_size=3, max_size=3), min_size=1, max_size=6))
def test_the_decimal_reader_reads_what_float_reads_or_passes(
    cells: list[list[str]],
) -> None:
    values = read(cells, (0, 2))
    if values is None:
        return
    expected = np.array([[float(row[0]), float(row[2])] for row in cells])
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(np.signbit(values), np.signbit(expected))


def test_the_decimal_reader_takes_plain_decimals() -> None:
    values = read(
        [["5.1", "-0", "x"], ["-0.0", ".5", "y"], ["123456789012345", "7.", "z"]],
        (0, 1),
    )
    assert values is not None
    assert values.tolist() == [[5.1, 0.0], [0.0, 0.5], [123456789012345.0, 7.0]]
    assert np.signbit(values).tolist() == [[False, True], [True, False], [False] * 2]


def test_the_decimal_reader_passes_what_it_cannot_read_exactly() -> None:
    assert read([["1234567890123456"]], (0,)) is None  # 16 digits
    assert read([["1e5"]], (0,)) is None
    assert read([["-"]], (0,)) is None
    assert read([["."]], (0,)) is None
    assert read([["1-"]], (0,)) is None
    assert read([["1.2.3"]], (0,)) is None


def test_the_fast_csv_path_reads_what_numpys_reader_reads() -> None:
    table = CsvTable.from_header(
        b"sepal_length,sepal_width,petal_length,petal_width,id", IRIS_FEATURES
    )
    chunk = b"0.1234567891,-0,12,7,a\n5.1,3.5,-1.25,0.2,b\n"
    fast = table._parse_fast(chunk)
    assert fast is not None and isinstance(fast.heads, Lines)
    assert fast.heads == table._parse_careful(chunk, 1, 2).heads
    assert fast.heads == [b"0.1234567891,-0,12,7,a", b"5.1,3.5,-1.25,0.2,b"]
    values = fast.inputs["float_input"]
    expected = np.loadtxt(
        io.BytesIO(chunk), delimiter=",", usecols=(0, 1, 2, 3), dtype=np.float64
    ).astype(np.float32)
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(np.signbit(values), np.signbit(expected))


# -- rows laid out in one matrix -------------------------------------------------

TRICKY: dict[str, np.ndarray] = {
    # Floats that need 9 significant digits, both zeros, NaN, a huge value.
    "score": np.array(
        [0.123456789, -0.0, math.nan, 16777217.0, -1e-7, 3.4e38], np.float32
    ),
    # int64's and uint64's ends.
    "count": np.array([2**63 - 1, -(2**63), 0, -1, 10**12, 7], np.int64),
    "big": np.array([2**64 - 1, 0, 1, 2**63, 5, 9], np.uint64),
    "flag": np.array([True, False, True, False, True, False]),
    "label": np.array([0, 1, 2, 2, 1, 0], np.int64),
}
TRICKY_FIELDS = (
    Field("score", "score", ("score",), as_list=False),
    Field("count", "count", ("count",), as_list=False),
    Field("big", "big", ("big",), as_list=False),
    Field("flag", "flag", ("flag",), as_list=False),
    Field(
        "label",
        "label",
        ("label",),
        as_list=False,
        is_label=True,
        labels=("a,b", 'say "hi"', " padded "),
    ),
)
HEADS = [b"1,x", b"22,yy", b"333,zzz", b"4,", b"-5.5,\xc3\xa9t\xc3\xa9", b"6,f"]


def lines(heads: list[bytes]) -> Lines:
    text = b"".join(head + b"\n" for head in heads)
    _, starts, ends, _ = lines_of(text)
    return Lines(text, starts, ends)


def test_laid_out_rows_are_the_joined_rows_byte_for_byte() -> None:
    renderer = make_renderer(TRICKY_FIELDS, CSV)
    joined = assemble(HEADS, renderer.suffixes(TRICKY, None))
    assert renderer.rows(lines(HEADS), TRICKY, None) == joined
    assert joined.splitlines() == [
        b'1,x,0.123457,9223372036854775807,18446744073709551615,true,"a,b"',
        b'22,yy,-0.000000,-9223372036854775808,0,false,"say ""hi"""',
        b'333,zzz,NaN,0,1,true," padded "',
        b'4,,16777216.000000,-1,9223372036854775808,false," padded "',
        '-5.5,été,-0.000000,1000000000000,5,true,"say ""hi"""'.encode(),
        b'6,f,339999995214436424907732413799364296704.000000,7,9,false,"a,b"',
    ]


def test_lines_of_very_different_lengths_are_joined_one_by_one() -> None:
    renderer = make_renderer(output_fields(manifest(IRIS, LABELS)), CSV)
    outputs: dict[str, np.ndarray] = {
        "label": np.array([0, 1], np.int64),
        "probabilities": np.array([[1, 0, 0], [0.5, 0.25, 0.25]], np.float32),
    }
    heads = [b"1", b"2," + b"x" * 10_000]
    assert renderer.rows(lines(heads), outputs, None) == (
        b"1,setosa,1.000000,0.000000,0.000000\n"
        + heads[1]
        + b",versicolor,0.500000,0.250000,0.250000\n"
    )


def test_lines_holding_nul_bytes_keep_them() -> None:
    renderer = make_renderer(TRICKY_FIELDS, CSV)
    heads = [b"1,\0", b"2,x", b"3,y", b"4,z", b"5,\0\0", b"6,w"]
    assert renderer.rows(lines(heads), TRICKY, None) == assemble(
        heads, renderer.suffixes(TRICKY, None)
    )


def test_lines_with_the_right_commas_in_all_but_not_each_leave_the_fast_path() -> None:
    table = CsvTable.from_header(
        b"sepal_length,sepal_width,petal_length,petal_width", IRIS_FEATURES
    )
    chunk = b"1,2,3,4,5,6\n7\n1,2,3,4\n"  # 5 + 0 + 3 commas: 3 a line in all
    assert table._parse_fast(chunk) is None
    careful = table._parse_careful(chunk, 1, 2)
    assert [rejection.reason for rejection in careful.rejections] == [
        "the row has 6 fields, the header has 4",
        "the row has 1 fields, the header has 4",
    ]
